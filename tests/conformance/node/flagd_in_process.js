// Evaluates corpora in process with the real Node flagd provider (resolverType 'in-process':
// it syncs definitions from flagd.sync.v1.FlagSyncService and evaluates with @openfeature/flagd-core).
// usage: node flagd_in_process.js corpus HOST:PORT
//          stdin: one JSON command a line, {"corpus": PATH, "await_change": BOOL}; stdout: one JSON
//          line per command (answers as in openfeature_client.js). With await_change it first
//          waits (up to 30 s) for a ConfigurationChanged event of every namespace it syncs.
//        node flagd_in_process.js bench HOST:PORT FLAG ROUNDS
//          times in-process boolean evaluations against ResolveBoolean round trips (resolver rpc).
const fs = require('fs');
const readline = require('readline');
const { OpenFeature, ProviderEvents } = require('@openfeature/server-sdk');
const { FlagdProvider } = require('@openfeature/flagd-provider');

const DEFAULTS = { boolean: false, string: '', integer: 0, float: 0, object: {} };

function split(target) {
  const i = target.lastIndexOf(':');
  return [target.slice(0, i), Number(target.slice(i + 1))];
}

function provider(target, namespace, resolverType) {
  const [host, port] = split(target);
  const options = { host, port, resolverType, cache: 'disabled', deadlineMs: 5000 };
  if (namespace !== 'default') options.selector = `flagSetId=${namespace}`;
  return new FlagdProvider(options);
}

async function evaluate(client, c) {
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
  return { value: d.value, variant: d.variant ?? null, reason: d.reason, error: d.errorCode ?? null };
}

function write(line) {
  return new Promise((resolve) => process.stdout.write(line + '\n', resolve));
}

async function corpus(target) {
  const clients = {};
  const changed = {};
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const command = JSON.parse(line);
    if (command.await_change) {
      for (const [ns, flag] of Object.entries(changed)) {
        for (let i = 0; i < 300 && !flag.seen; i++) await new Promise((r) => setTimeout(r, 100));
        if (!flag.seen) {
          await write(JSON.stringify({ error: `no configuration change for ${ns}` }));
          process.exit(1);
        }
      }
    }
    for (const flag of Object.values(changed)) flag.seen = false;
    const cases = JSON.parse(fs.readFileSync(command.corpus, 'utf8'));
    const out = [];
    for (const c of cases) {
      if (!clients[c.namespace]) {
        await OpenFeature.setProviderAndWait(c.namespace, provider(target, c.namespace, 'in-process'));
        const client = OpenFeature.getClient(c.namespace);
        const flag = { seen: false };
        client.addHandler(ProviderEvents.ConfigurationChanged, () => { flag.seen = true; });
        clients[c.namespace] = client;
        changed[c.namespace] = flag;
      }
      out.push(await evaluate(clients[c.namespace], c));
    }
    await write(JSON.stringify(out));
  }
  await OpenFeature.close();
  process.exit(0);
}

async function bench(target, flag, rounds) {
  const ctx = { targetingKey: 'user-42', country: 'DE', plan: 'pro' };
  const timings = {};
  for (const [name, resolverType] of [['in_process', 'in-process'], ['rpc', 'rpc']]) {
    await OpenFeature.setProviderAndWait(name, provider(target, 'default', resolverType));
    const client = OpenFeature.getClient(name);
    for (let i = 0; i < Math.min(rounds, 200); i++) await client.getBooleanValue(flag, false, ctx);
    const start = process.hrtime.bigint();
    for (let i = 0; i < rounds; i++) await client.getBooleanValue(flag, false, ctx);
    timings[name] = Number(process.hrtime.bigint() - start) / 1e3 / rounds;
  }
  await OpenFeature.close();
  await write(JSON.stringify({
    client: 'node', in_process_us: timings.in_process, rpc_us: timings.rpc, ratio: timings.rpc / timings.in_process,
  }));
  process.exit(0);
}

const [mode, target, flag, rounds] = process.argv.slice(2);
(mode === 'bench' ? bench(target, flag, Number(rounds)) : corpus(target)).catch((e) => {
  console.error(e);
  process.exit(1);
});
