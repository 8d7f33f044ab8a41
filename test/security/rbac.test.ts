/**
 * deploy/rbac/<service>.yaml grants exactly what the service's code calls: its KubeClient calls,
 * its informers (list + watch), its status writer and event recorder. A call added without a
 * rule, or a rule left without a call, fails this test.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Resources } from '@plugline/kube';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SERVICES = ['spec-watcher', 'attachment-orchestrator', 'node-mounter', 'domain-updater'];

/** `group/resource:verb` of the KubeClient methods the services use. */
const CLIENT_CALLS: Record<string, string[]> = {
  getVmi: ['kubevirt.io/virtualmachineinstances:get'],
  listVmis: ['kubevirt.io/virtualmachineinstances:list'],
  getVm: ['kubevirt.io/virtualmachines:get'],
  patchVmi: ['kubevirt.io/virtualmachineinstances:patch'],
  patchVmiStatus: ['kubevirt.io/virtualmachineinstances/status:patch'],
  getPvc: ['/persistentvolumeclaims:get'],
  getPod: ['/pods:get'],
  listPods: ['/pods:list'],
  createPod: ['/pods:create'],
  deletePod: ['/pods:delete'],
  createEvent: ['/events:create'],
  patchEvent: ['/events:patch'],
};
/** Helpers of `@plugline/kube` called as functions, and what they call. */
const HELPER_FUNCTIONS: Record<string, string[]> = {
  currentVmi: ['kubevirt.io/virtualmachineinstances:get'],
};
const HELPERS: Record<string, string[]> = {
  EventRecorder: ['/events:create', '/events:patch'],
  StatusWriter: ['kubevirt.io/virtualmachineinstances/status:patch'],
};

function sources(service: string): string {
  const dir = join(ROOT, 'services', service, 'src');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.ts'))
    .map((f) => readFileSync(join(dir, f), 'utf8'))
    .join('\n');
}

/** What the code uses, as `group/resource:verb`. */
export function usedByCode(code: string): Set<string> {
  const used = new Set<string>();
  for (const m of code.matchAll(/\b(?:client|kube)\.([a-zA-Z]+)\(/g)) {
    for (const p of CLIENT_CALLS[m[1]!] ?? []) used.add(p);
  }
  for (const [name, perms] of Object.entries(HELPER_FUNCTIONS)) {
    if (new RegExp(`\\b${name}\\(`).test(code)) perms.forEach((p) => used.add(p));
  }
  for (const [name, perms] of Object.entries(HELPERS)) {
    if (new RegExp(`new ${name}\\b`).test(code)) perms.forEach((p) => used.add(p));
  }
  for (const m of code.matchAll(/resource: Resources\.([a-zA-Z]+)/g)) {
    const r = Resources[m[1] as keyof typeof Resources];
    used.add(`${r.group}/${r.plural}:list`);
    used.add(`${r.group}/${r.plural}:watch`);
  }
  return used;
}

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

function grantedByManifest(service: string): Set<string> {
  const text = readFileSync(join(ROOT, 'deploy', 'rbac', `${service}.yaml`), 'utf8');
  const granted = new Set<string>();
  for (const doc of parseAllDocuments(text)) {
    const obj = doc.toJS() as { kind?: string; rules?: Rule[] };
    if (obj.kind !== 'ClusterRole') continue;
    const rules = obj.rules ?? [];
    rules
      .flatMap((r) => r.apiGroups.flatMap((g) => r.resources.map((res) => ({ g, res, r }))))
      .forEach(({ g, res, r }) => r.verbs.forEach((v) => granted.add(`${g}/${res}:${v}`)));
  }
  return granted;
}

describe('RBAC: each service is granted exactly what its code calls', () => {
  for (const service of SERVICES) {
    it(service, () => {
      const used = usedByCode(sources(service));
      expect(used.size).toBeGreaterThan(0);
      expect([...grantedByManifest(service)].sort()).toEqual([...used].sort());
    });
  }

  it('no service may delete, update or escalate beyond its own resources', () => {
    for (const service of SERVICES) {
      for (const g of grantedByManifest(service)) {
        expect(g).not.toMatch(/\*|secrets|:escalate|:bind|:impersonate/);
        if (g.endsWith(':delete'))
          expect(service === 'attachment-orchestrator' && g === '/pods:delete').toBe(true);
      }
    }
  });
});
