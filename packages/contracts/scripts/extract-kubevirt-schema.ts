/**
 * Copies the parts of KubeVirt's published schema and examples that the wire-compatibility tests
 * need into `test/fixtures/`, so the tests run without `../shared`.
 *
 *   pnpm exec tsx packages/contracts/scripts/extract-kubevirt-schema.ts [kubevirt-data-dir]
 *
 * The data dir defaults to `/work/shared/kubevirt` (swagger.json, examples/*.yaml, README.md).
 */
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOTS = [
  'v1.VirtualMachineInstance',
  'v1.VirtualMachine',
  'v1.AddVolumeOptions',
  'v1.RemoveVolumeOptions',
];

type Schema = Record<string, unknown>;

/** Every definition reachable from the roots through `$ref`, in a stable order. */
function reachable(definitions: Record<string, Schema>, roots: string[]): string[] {
  const seen = new Set<string>();
  const queue = [...roots];
  while (queue.length > 0) {
    const name = queue.shift() as string;
    if (seen.has(name)) continue;
    const definition = definitions[name];
    if (definition === undefined) throw new Error(`definition ${name} is not in the schema`);
    seen.add(name);
    const refs = JSON.stringify(definition).matchAll(/"\$ref":"#\/definitions\/([^"]+)"/g);
    for (const [, ref] of refs) if (ref !== undefined && !seen.has(ref)) queue.push(ref);
  }
  return [...seen].sort();
}

function main(): void {
  const source = process.argv[2] ?? '/work/shared/kubevirt';
  const here = dirname(fileURLToPath(import.meta.url));
  const fixtures = join(here, '..', 'test', 'fixtures');
  const swagger = JSON.parse(readFileSync(join(source, 'swagger.json'), 'utf8')) as {
    info?: unknown;
    definitions: Record<string, Schema>;
  };
  const names = reachable(swagger.definitions, ROOTS);
  const definitions = Object.fromEntries(names.map((n) => [n, swagger.definitions[n]]));
  mkdirSync(join(fixtures, 'examples'), { recursive: true });
  writeFileSync(
    join(fixtures, 'kubevirt-definitions.json'),
    `${JSON.stringify({ source: 'kubevirt/kubevirt api/openapi-spec/swagger.json', info: swagger.info, roots: ROOTS, definitions }, null, 2)}\n`,
  );
  const examples = readdirSync(join(source, 'examples')).filter((f) => f.endsWith('.yaml'));
  for (const file of examples) {
    copyFileSync(join(source, 'examples', file), join(fixtures, 'examples', file));
    chmodSync(join(fixtures, 'examples', file), 0o644);
  }
  const attribution = readFileSync(join(source, 'README.md'), 'utf8');
  writeFileSync(
    join(fixtures, 'README.md'),
    [
      '# KubeVirt fixtures',
      '',
      'Extracted by `scripts/extract-kubevirt-schema.ts` from the KubeVirt reference data:',
      `\`kubevirt-definitions.json\` holds the ${names.length} definitions of KubeVirt's OpenAPI`,
      `document reachable from ${ROOTS.map((r) => `\`${r}\``).join(', ')}, unchanged;`,
      `\`examples/\` holds KubeVirt's example manifests (${examples.length} files), unchanged.`,
      '',
      'Attribution of the source data, as it came with it:',
      '',
      ...attribution.split('\n').map((line) => (line === '' ? '>' : `> ${line}`)),
      '',
    ].join('\n'),
  );
  console.log(`${names.length} definitions, ${examples.length} examples written to ${fixtures}`);
}

main();
