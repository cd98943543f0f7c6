// Drives headless Chromium (Debian's, through puppeteer-core) for the browser conformance
// tests: `node drive.mjs URL` loads URL, waits until the page sets `window.__vexil.done`, and
// prints `window.__vexil` as JSON on stdout. The page's console goes to stderr.
import puppeteer from 'puppeteer-core';

const url = process.argv[2];
if (!url) {
  console.error('usage: node drive.mjs URL');
  process.exit(2);
}
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // No sandbox: the tests may run as root (containers, CI).
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
});
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.error(`[page ${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => console.error(`[page error] ${e}`));
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForFunction('window.__vexil && window.__vexil.done', { timeout: 60000 });
  const result = await page.evaluate(() => window.__vexil);
  process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  await browser.close();
}
