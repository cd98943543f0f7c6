// The browser conformance page's script, bundled by esbuild at test time (never committed).
// It reads ./config.json (written by the test) and runs the real browser SDKs against vexil
// serve on another origin:
//   - @openfeature/web-sdk with @openfeature/ofrep-web-provider (OFREP bulk evaluation);
//   - unleash-proxy-client (the Unleash frontend API).
// The config names a scenario (`answers`: for every context, each flag's answer through each
// SDK; the test compares them with Vexil's). `window.__vexil` holds {done: true, origin, ...the
// scenario's result} when finished (drive.mjs waits for `done`). Scenarios are plain async
// functions of the config, listed in `scenarios`: a later one (OFREP SSE) goes next to these.
import { OpenFeature } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';
import { UnleashClient, InMemoryStorageProvider, EVENTS } from 'unleash-proxy-client';

const show = (text) => {
  document.getElementById('status').textContent = text;
};

// Errors as text: Error objects by name and message; the Unleash SDK's error events are plain
// objects ({type, code} or {type, error}).
const errorText = (e) => {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  if (e && e.error instanceof Error) return `${e.type}: ${e.error.name}: ${e.error.message}`;
  return typeof e === 'object' ? JSON.stringify(e) : String(e);
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

// `post`: the SDK's `usePOSTrequests` (body {"context": ...}) instead of GET with a query.
async function unleash(config, post) {
  const errors = [];
  const client = new UnleashClient({
    usePOSTrequests: post,
    url: `${config.vexil}${config.prefix}/api/frontend`,
    clientKey: config.token,
    appName: config.appName,
    environment: config.environment,
    context: config.contexts[0].unleash,
    disableRefresh: true,
    disableMetrics: true,
    storageProvider: new InMemoryStorageProvider(),
  });
  client.on(EVENTS.ERROR, (e) => errors.push(errorText(e)));
  await client.start();
  if (errors.length > 0) {
    client.stop();
    return { error: errors[0], toggles: client.getAllToggles().length };
  }
  const answers = [];
  for (const context of config.contexts) {
    await client.updateContext(context.unleash);
    const answer = {};
    for (const flag of config.flags) {
      const variant = client.getVariant(flag.key);
      answer[flag.key] = { enabled: client.isEnabled(flag.key), variant };
    }
    answers.push(answer);
  }
  // The same context again: the SDK sends the ETag it read (If-None-Match), gets 304 and keeps
  // its toggles.
  const before = JSON.stringify(client.getAllToggles());
  await client.updateContext(config.contexts[config.contexts.length - 1].unleash);
  const kept = JSON.stringify(client.getAllToggles()) === before;
  client.stop();
  return { answers, errors, etag: client.etag || null, kept };
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

// The scenarios a config may name (`scenario`, default `answers`).
const scenarios = { answers };

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
