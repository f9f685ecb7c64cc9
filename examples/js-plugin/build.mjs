// Builds js-plugin.wasm from plugin.js against the WIT in ../../wit.
// Usage: npm install && node build.mjs [OUT.wasm]
import { componentize } from '@bytecodealliance/componentize-js';
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? resolve(here, 'js-plugin.wasm');
const { component } = await componentize({
  sourcePath: resolve(here, 'plugin.js'),
  witPath: resolve(here, '../../wit'),
  worldName: 'plugin',
  // No WASI features beyond what the plugin world grants.
  disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
});
await writeFile(out, component);
console.log(`built ${out}`);
