import { describe, expect, it } from 'vitest';
import { ApiError } from '../src/index.js';
import { applyJsonPatch, applyMergePatch, strategicMerge } from '../src/patch.js';
import { parseFieldSelector, parseLabelSelector } from '../src/selectors.js';

describe('JSON patch', () => {
  it('adds, replaces, removes, moves, copies and tests (RFC 6902)', () => {
    const doc = { a: { b: [1, 2] }, c: 'x' };
    const out = applyJsonPatch(doc, [
      { op: 'test', path: '/c', value: 'x' },
      { op: 'add', path: '/a/b/-', value: 3 },
      { op: 'add', path: '/a/b/0', value: 0 },
      { op: 'replace', path: '/c', value: 'y' },
      { op: 'copy', from: '/c', path: '/d' },
      { op: 'move', from: '/d', path: '/e~1f' },
      { op: 'remove', path: '/a/b/1' },
    ]);
    expect(out).toEqual({ a: { b: [0, 2, 3] }, c: 'y', 'e/f': 'y' });
    expect(doc).toEqual({ a: { b: [1, 2] }, c: 'x' });
  });

  it('treats a missing path as null in a test, as the real API server does', () => {
    const out = applyJsonPatch({ spec: {} }, [
      { op: 'test', path: '/spec/volumes', value: null },
      { op: 'add', path: '/spec/volumes', value: [{ name: 'v' }] },
    ]);
    expect(out).toEqual({ spec: { volumes: [{ name: 'v' }] } });
  });

  it.each([
    [[{ op: 'test', path: '/c', value: 'nope' }]],
    [[{ op: 'test', path: '/missing', value: 1 }]],
    [[{ op: 'replace', path: '/missing', value: 1 }]],
    [[{ op: 'remove', path: '/a/b/5' }]],
  ])('refuses %j with 422', (patch) => {
    try {
      applyJsonPatch({ a: { b: [] }, c: 'x' }, patch);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ApiError);
      expect((err as ApiError).code).toBe(422);
    }
  });
});

describe('merge patches', () => {
  it('merge patch deletes with null and replaces lists (RFC 7386)', () => {
    expect(
      applyMergePatch(
        { a: 1, b: { c: 2, d: 3 }, l: [1] },
        { a: null, b: { c: null, e: 4 }, l: [2] },
      ),
    ).toEqual({
      b: { d: 3, e: 4 },
      l: [2],
    });
  });

  it('strategic merge merges keyed lists, honours $patch delete and primitive-list directives', () => {
    const pod = {
      metadata: { finalizers: ['a'], ownerReferences: [{ uid: '1', name: 'x' }] },
      spec: {
        containers: [
          { name: 'c1', image: 'i1' },
          { name: 'c2', image: 'i2' },
        ],
        tolerations: [{ key: 'k' }],
      },
    };
    const out = strategicMerge(pod, {
      metadata: { finalizers: ['b'] },
      spec: {
        containers: [
          { name: 'c2', image: 'new' },
          { name: 'c1', $patch: 'delete' },
          { name: 'c3', image: 'i3' },
        ],
        tolerations: [{ key: 'z' }],
        '$setElementOrder/containers': [{ name: 'c2' }, { name: 'c3' }],
      },
    });
    expect(out).toEqual({
      metadata: { finalizers: ['a', 'b'], ownerReferences: [{ uid: '1', name: 'x' }] },
      spec: {
        containers: [
          { name: 'c2', image: 'new' },
          { name: 'c3', image: 'i3' },
        ],
        tolerations: [{ key: 'z' }],
      },
    });
    expect(
      strategicMerge(
        { metadata: { finalizers: ['a', 'b'] } },
        { metadata: { '$deleteFromPrimitiveList/finalizers': ['a'] } },
      ),
    ).toEqual({
      metadata: { finalizers: ['b'] },
    });
  });
});

describe('selectors', () => {
  const obj = {
    metadata: { name: 'n', namespace: 'ns', labels: { app: 'web', tier: 'fe' } },
    spec: { nodeName: 'node-1' },
    status: { phase: 'Running' },
  };
  it.each([
    ['app=web', true],
    ['app==web,tier!=be', true],
    ['app in (db, web),tier notin (be)', true],
    ['app,!missing', true],
    ['app=db', false],
    ['!app', false],
    ['tier in (be)', false],
  ])('label selector %s → %s', (sel, want) => {
    expect(parseLabelSelector(sel)!(obj)).toBe(want);
  });
  it.each([
    ['metadata.name=n,metadata.namespace=ns', true],
    ['spec.nodeName=node-1,status.phase!=Pending', true],
    ['status.phase=Pending', false],
  ])('field selector %s → %s', (sel, want) => {
    expect(parseFieldSelector(sel)!(obj)).toBe(want);
  });
});
