// Regenerates fixtures/kubevirt-openapi.json from KubeVirt's published swagger document
// (../../../shared/kubevirt/swagger.json by default): only the definitions reachable from
// v1.VirtualMachineInstance and v1.VirtualMachine, with descriptions dropped to keep it small.
// Usage: node scripts/extract-kubevirt-schema.mjs [path/to/swagger.json]
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const source = process.argv[2] ?? join(here, '../../../../shared/kubevirt/swagger.json');
const swagger = JSON.parse(readFileSync(source, 'utf8'));
const all = swagger.definitions;
const roots = ['v1.VirtualMachineInstance', 'v1.VirtualMachine'];
const picked = {};

function strip(node) {
  if (Array.isArray(node)) return node.map(strip);
  if (node === null || typeof node !== 'object') return node;
  const out = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === 'description') continue;
    if (key === '$ref') visit(value.split('/').pop());
    out[key] = strip(value);
  }
  return out;
}

function visit(name) {
  if (name in picked) return;
  picked[name] = null;
  picked[name] = strip(all[name]);
}

roots.forEach(visit);
const sorted = Object.fromEntries(
  Object.keys(picked)
    .sort()
    .map((k) => [k, picked[k]]),
);
writeFileSync(
  join(here, '../fixtures/kubevirt-openapi.json'),
  JSON.stringify(
    {
      source:
        'kubevirt/kubevirt api/openapi-spec/swagger.json @ d923fdb815cd2016ddaebdaaa51db04133576d72',
      roots,
      definitions: sorted,
    },
    null,
    1,
  ) + '\n',
);
console.log(`wrote ${Object.keys(sorted).length} definitions`);
