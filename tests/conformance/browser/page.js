// The browser conformance page's script, bundled by esbuild at test time (never committed).
// It reads ./config.json (written by the test) and runs the real browser SDKs against vexil
// serve on another origin:
//   - @openfeature/web-sdk with @openfeature/ofrep-web-provider (OFREP bulk evaluation);
//   - unleash-proxy-client (the Unleash frontend API).
// The config names a scenario (`answers`: for every context, each flag's answer through each
// SDK; the test compares them with Vexil's). `window.__vexil` holds {done: true, origin, ...the
// scenario's result} when finished (drive.mjs waits for `done`). Scenarios are plain async
// functions of the config, listed in `scenarios` (`answers`, and `sse`: a commit's new value
// shown through OFREP's change stream without reloading).
import { OpenFeature } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';
import { errorText, unleash } from './unleash.js';

const show = (text) => {
  document.getElementById('status').textContent = text;
};

// A raw cross-origin request, as a page's own code would make it: shows whether CORS lets the
// answer through at all (a blocked one is a TypeError with no status), then revalidates with
// the ETag it could read (exposed) and expects 304.
async function rawFetch(config) {
  const bulk = (etag) =>
    fetch(`${config.vexil}${config.prefix}/ofrep/v1/evaluate/flags`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${config.token}`,
        ...(etag ? { 'if-none-match': etag } : {}),
      },
      body: JSON.stringify({ context: {} }),
    });
  try {
    const first = await bulk(null);
    const etag = first.headers.get('etag');
    const again = etag ? await bulk(etag) : null;
    return { status: first.status, etag, revalidated: again && again.status };
  } catch (e) {
    return { error: errorText(e) };
  }
}

const getters = {
  boolean: (client, key) => client.getBooleanDetails(key, false),
  string: (client, key) => client.getStringDetails(key, ''),
  integer: (client, key) => client.getNumberDetails(key, 0),
  float: (client, key) => client.getNumberDetails(key, 0),
  object: (client, key) => client.getObjectDetails(key, {}),
};

async function ofrep(config) {
  const provider = new OFREPWebProvider({
    baseUrl: `${config.vexil}${config.prefix}`,
    headers: [['Authorization', `Bearer ${config.token}`]],
    cacheMode: 'disabled',
    changeDetection: 'none',
    disableVisibilityRefresh: true,
  });
  try {
    await OpenFeature.setContext(config.contexts[0].ofrep);
    await OpenFeature.setProviderAndWait(provider);
  } catch (e) {
    return { error: errorText(e) };
  }
  const client = OpenFeature.getClient();
  const answers = [];
  for (const context of config.contexts) {
    await OpenFeature.setContext(context.ofrep);
    const answer = {};
    for (const flag of config.flags) {
      const d = getters[flag.type](client, flag.key);
      answer[flag.key] = { value: d.value, variant: d.variant ?? null, errorCode: d.errorCode ?? null };
    }
    answers.push(answer);
  }
  await OpenFeature.close();
  return { answers };
}

// Every flag of the config's namespace for every context, through each SDK.
async function answers(config) {
  return {
    fetch: await rawFetch(config),
    ofrep: await ofrep(config),
    unleash: await unleash(config, false),
    unleashPost: await unleash(config, true),
  };
}

// OFREP change events over SSE: the provider (change detection `sse`, its default; polling
// off) opens the stream the bulk answer advertises; the test commits a new value of
// `config.flag` once the stream is open, and this page, never reloaded, polls what the client
// shows until it changes (bounded: `config.waitMs`).
async function sse(config) {
  const provider = new OFREPWebProvider({
    baseUrl: `${config.vexil}${config.prefix}`,
    headers: [['Authorization', `Bearer ${config.token}`]],
    cacheMode: 'disabled',
    changeDetection: 'sse',
    pollInterval: 0,
    disableVisibilityRefresh: true,
  });
  try {
    await OpenFeature.setProviderAndWait(provider);
  } catch (e) {
    return { error: errorText(e) };
  }
  const client = OpenFeature.getClient();
  let changes = 0;
  client.addHandler('PROVIDER_CONFIGURATION_CHANGED', () => {
    changes += 1;
  });
  const first = client.getStringValue(config.flag, '');
  const loaded = performance.timeOrigin;
  show(`showing ${first}`);
  const start = performance.now();
  while (performance.now() - start < config.waitMs) {
    const now = client.getStringValue(config.flag, '');
    if (now !== first) {
      show(`showing ${now}`);
      await OpenFeature.close();
      return { first, now, changes, sameDocument: performance.timeOrigin === loaded };
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await OpenFeature.close();
  return { first, now: first, changes, error: `no change within ${config.waitMs} ms` };
}

// The scenarios a config may name (`scenario`, default `answers`).
const scenarios = { answers, sse };

async function main() {
  const config = await (await fetch('./config.json')).json();
  const scenario = scenarios[config.scenario || 'answers'];
  if (!scenario) throw new Error(`unknown scenario ${config.scenario}`);
  const result = await scenario(config);
  window.__vexil = { done: true, origin: window.location.origin, ...result };
  show('done');
}

main().catch((e) => {
  window.__vexil = { done: true, error: errorText(e) };
  show(`failed: ${errorText(e)}`);
});
