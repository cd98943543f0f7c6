// Evaluates a corpus with the real Node OpenFeature flagd provider and prints the answers as JSON.
// usage: node openfeature_client.js HOST:PORT CORPUS.json   (corpus as in openfeature_client.py)
const fs = require('fs');
const { OpenFeature } = require('@openfeature/server-sdk');
const { FlagdProvider } = require('@openfeature/flagd-provider');

const DEFAULTS = { boolean: false, string: '', integer: 0, float: 0, object: {} };

async function main() {
  const [target, corpusPath] = process.argv.slice(2);
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const corpus = JSON.parse(fs.readFileSync(corpusPath, 'utf8'));
  const clients = {};
  const out = [];
  for (const c of corpus) {
    if (!clients[c.namespace]) {
      const options = { host, port, resolverType: 'rpc', cache: 'disabled', deadlineMs: 5000 };
      if (c.namespace !== 'default') options.selector = `flagSetId=${c.namespace}`;
      await OpenFeature.setProviderAndWait(c.namespace, new FlagdProvider(options));
      clients[c.namespace] = OpenFeature.getClient(c.namespace);
    }
    const client = clients[c.namespace];
    const ctx = { ...(c.attributes || {}) };
    if (c.key !== null && c.key !== undefined) ctx.targetingKey = c.key;
    const get = {
      boolean: (k, d, x) => client.getBooleanDetails(k, d, x),
      string: (k, d, x) => client.getStringDetails(k, d, x),
      integer: (k, d, x) => client.getNumberDetails(k, d, x),
      float: (k, d, x) => client.getNumberDetails(k, d, x),
      object: (k, d, x) => client.getObjectDetails(k, d, x),
    }[c.type];
    const d = await get(c.flag, DEFAULTS[c.type], ctx);
    out.push({ value: d.value, variant: d.variant ?? null, reason: d.reason, error: d.errorCode ?? null });
  }
  await OpenFeature.close();
  // Exit only once the (large) output is flushed to the pipe.
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
}

// usage: node openfeature_client.js cache HOST:PORT NAMESPACE FLAG
// STATIC answers are cached (reason CACHED) until a configuration_change names the flag; the
// test commits a change after the first line and writes a line to stdin.
async function cache() {
  const [target, namespace, flag] = process.argv.slice(3);
  const host = target.slice(0, target.lastIndexOf(':'));
  const port = Number(target.slice(target.lastIndexOf(':') + 1));
  const { ProviderEvents } = require('@openfeature/server-sdk');
  const options = { host, port, resolverType: 'rpc', cache: 'lru', deadlineMs: 5000, selector: `flagSetId=${namespace}` };
  await OpenFeature.setProviderAndWait(new FlagdProvider(options));
  const client = OpenFeature.getClient();
  let changed = false;
  client.addHandler(ProviderEvents.ConfigurationChanged, (details) => {
    if ((details?.flagsChanged || []).includes(flag)) changed = true;
  });
  const first = await client.getStringDetails(flag, '', {});
  const second = await client.getStringDetails(flag, '', {});
  process.stdout.write(JSON.stringify({ first: [first.value, first.reason], second: [second.value, second.reason] }) + '\n');
  await new Promise((resolve) => process.stdin.once('data', resolve));
  for (let i = 0; i < 150 && !changed; i++) await new Promise((r) => setTimeout(r, 100));
  const third = await client.getStringDetails(flag, '', {});
  await OpenFeature.close();
  process.stdout.write(JSON.stringify({ changed_event: changed, third: [third.value, third.reason] }) + '\n', () => process.exit(0));
}

(process.argv[2] === 'cache' ? cache() : main()).catch((e) => {
  console.error(e);
  process.exit(1);
});
