// Builds a plugin component from a JavaScript source against the WIT in ../../wit.
// Usage: npm install && node build.mjs [OUT.wasm] [SOURCE.js]
// (default: plugin.js into js-plugin.wasm). A source that calls fetch() gets the
// wasi:http imports (the server links them for plugins granted `http`); others do not.
import { componentize } from '@bytecodealliance/componentize-js';
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? resolve(here, 'js-plugin.wasm');
const sourcePath = resolve(here, process.argv[3] ?? 'plugin.js');
const fetches = (await readFile(sourcePath, 'utf8')).includes('fetch(');
const { component } = await componentize({
  sourcePath,
  witPath: resolve(here, '../../wit'),
  worldName: 'plugin',
  // No WASI features beyond what the plugin world grants.
  disableFeatures: ['random', 'stdio', 'clocks', 'fetch-event', ...(fetches ? [] : ['http'])],
});
await writeFile(out, component);
console.log(`built ${out}`);
