// Builds {{wasm}} from plugin.js against the WIT in wit/: npm install && npm run build
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

const { component } = await componentize({
  sourcePath: 'plugin.js',
  witPath: 'wit',
  worldName: 'plugin',
  // No WASI features beyond what the plugin world grants (drop 'http' from this list, and
  // grant the plugin `http`, to call fetch()).
  disableFeatures: ['random', 'stdio', 'clocks', 'fetch-event', 'http'],
});
await writeFile('{{wasm}}', component);
console.log('built {{wasm}}');
