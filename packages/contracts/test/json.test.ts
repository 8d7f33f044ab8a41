import { describe, expect, it } from 'vitest';
import { cloneJson } from '../src/index.js';

describe('cloneJson', () => {
  it('copies JSON values deeply: changing the copy leaves the original alone', () => {
    const original = {
      metadata: { name: 'vm', labels: { a: 'b' }, generation: 3 },
      spec: { volumes: [{ name: 'v1', persistentVolumeClaim: { claimName: 'c' } }, null] },
      status: { ready: true, when: new Date(0) },
    };
    const copy = cloneJson(original);
    expect(copy).toEqual(original);
    copy.metadata.labels.a = 'changed';
    copy.spec.volumes.push(null);
    (copy.spec.volumes[0] as { name: string }).name = 'v2';
    copy.status.when.setTime(5);
    expect(original.metadata.labels.a).toBe('b');
    expect(original.spec.volumes).toHaveLength(2);
    expect((original.spec.volumes[0] as { name: string }).name).toBe('v1');
    expect(original.status.when.getTime()).toBe(0);
    expect(copy.status.when).toBeInstanceOf(Date);
  });

  it('keeps a "__proto__" key of parsed JSON as data, not as the prototype', () => {
    const parsed = JSON.parse('{"a":{"__proto__":{"polluted":true}}}') as {
      a: Record<string, unknown>;
    };
    const copy = cloneJson(parsed);
    expect(Object.getPrototypeOf(copy.a)).toBe(Object.prototype);
    expect((copy.a as { polluted?: boolean }).polluted).toBeUndefined();
    expect(Object.keys(copy.a)).toEqual(['__proto__']);
    expect(JSON.stringify(copy)).toBe(JSON.stringify(parsed));
  });
});
