// unleash-proxy-client in Node (20+: a global fetch), as React Native or server-side rendering
// runs it: `node node-unleash.mjs config.json` prints the answers of both request modes (GET,
// `usePOSTrequests`) as JSON, in the shape the browser page leaves in window.__vexil.
import { readFileSync } from 'node:fs';
import { unleash } from './unleash.js';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const result = { unleash: await unleash(config, false), unleashPost: await unleash(config, true) };
process.stdout.write(`${JSON.stringify(result)}\n`);
