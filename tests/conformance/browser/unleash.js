// unleash-proxy-client (the Unleash browser SDK) on Vexil's frontend API: every flag of the
// config's namespace for every context. Shared by the browser page (page.js) and Node
// (node-unleash.mjs); it needs only `fetch`.
import { UnleashClient, InMemoryStorageProvider, EVENTS } from 'unleash-proxy-client';

// Errors as text: Error objects by name and message; the Unleash SDK's error events are plain
// objects ({type, code} or {type, error}).
export const errorText = (e) => {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  if (e && e.error instanceof Error) return `${e.type}: ${e.error.name}: ${e.error.message}`;
  return typeof e === 'object' ? JSON.stringify(e) : String(e);
};

// `post`: the SDK's `usePOSTrequests` (body {"context": ...}) instead of GET with a query.
export async function unleash(config, post) {
  const errors = [];
  const client = new UnleashClient({
    usePOSTrequests: post,
    url: `${config.vexil}${config.prefix}/api/frontend`,
    clientKey: config.token,
    appName: config.appName,
    environment: config.environment,
    context: config.contexts[0].unleash,
    disableRefresh: true,
    // Metrics on, without a timer: sent once, at the end (POST <url>/client/metrics).
    metricsInterval: 0,
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
  // The usage counts of the calls above; a failed POST is an error event.
  await client.sendMetrics();
  client.stop();
  return { answers, errors, etag: client.etag || null, kept };
}

