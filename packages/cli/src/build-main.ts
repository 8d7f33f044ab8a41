// `pnpm build`: bundles the services and plugctl into dist/ (or `--outdir <dir>`); see bundle.ts.
import { parseArgs } from 'node:util';
import { relative } from 'node:path';
import { buildBundles, DEFAULT_BUNDLE_DIR } from './bundle.js';

const { values } = parseArgs({ options: { outdir: { type: 'string' } } });
const started = Date.now();
const result = await buildBundles(values.outdir ?? DEFAULT_BUNDLE_DIR);
for (const warning of result.warnings) process.stderr.write(`warning: ${warning}\n`);
const files = result.files.filter((f) => f.endsWith('.mjs')).map((f) => relative(process.cwd(), f));
process.stdout.write(`built ${files.join(', ')} in ${Date.now() - started} ms\n`);
