// Evaluates cases with the real Node Unleash SDK (unleash-client 6.12.1, its own engine) against
// Vexil's Unleash client API mirror and writes the answers as JSON.
//
// usage: node unleash_client.js BASE_URL CASES.json OUT.json [TOKEN]
//
// Same cases and answers as tests/conformance/unleash_client.py: CASES.json is a list of
//   {"flag", "context": {userId, sessionId, remoteAddress, environment, appName, currentTime,
//                        properties: {K: V}}, "variant": bool}
// and OUT.json gets {"enabled": bool, "variant": {name, enabled, payload} | null} per case.
// The SDK polls GET BASE_URL/client/features itself (no bootstrap, no backup file); the script
// fails unless that poll succeeded and the SDK holds exactly the features of the body the
// server serves.
const fs = require('fs');
const { Unleash, InMemStorageProvider } = require('unleash-client');

function fail(msg) {
  process.stderr.write(`unleash_client.js: FAIL: ${msg}\n`);
  process.exit(1);
}

async function servedNames(baseUrl, token) {
  const headers = { 'Unleash-Client-Spec': '5.2.0' };
  if (token) headers.Authorization = token;
  const res = await fetch(`${baseUrl.replace(/\/$/, '')}/client/features`, { headers });
  if (res.status !== 200) fail(`GET /client/features answered ${res.status}`);
  const body = await res.json();
  return body.features.map((f) => f.name).sort();
}

async function main() {
  const [baseUrl, casesPath, outPath, token] = process.argv.slice(2);
  if (!outPath) fail('usage: node unleash_client.js BASE_URL CASES.json OUT.json [TOKEN]');
  const cases = JSON.parse(fs.readFileSync(casesPath, 'utf8'));

  const unleash = new Unleash({
    url: baseUrl,
    appName: 'vexil-conformance',
    instanceId: 'vexil-conformance',
    refreshInterval: 3600 * 1000, // one fetch at start; no re-poll during the run
    disableMetrics: true,
    customHeaders: token ? { Authorization: token } : undefined,
    storageProvider: new InMemStorageProvider(),
    skipInstanceCountWarning: true,
  });
  let loaded = null;
  unleash.on('changed', (features) => {
    loaded = features.map((f) => f.name).sort();
  });
  await new Promise((resolve) => {
    unleash.on('error', (e) => fail(`the SDK reported an error: ${e && e.message ? e.message : e}`));
    unleash.on('synchronized', resolve);
  });
  if (loaded === null) fail('the SDK synchronized without loading features');
  const served = await servedNames(baseUrl, token);
  if (JSON.stringify(loaded) !== JSON.stringify(served)) {
    fail(`the SDK loaded ${loaded.length} features but the server serves ${served.length}`);
  }
  process.stderr.write(`unleash_client.js: fetched ${served.length} features, evaluating ${cases.length} cases\n`);

  const out = cases.map((c) => {
    const ctx = c.context || {};
    const enabled = unleash.isEnabled(c.flag, ctx);
    let variant = null;
    if (c.variant) {
      const v = unleash.getVariant(c.flag, ctx);
      variant = { name: v.name, enabled: v.enabled, payload: v.payload ?? null };
    }
    return { enabled, variant };
  });
  unleash.destroy();
  fs.writeFileSync(outPath, JSON.stringify(out));
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
