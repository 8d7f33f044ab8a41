import { describe, expect, it } from 'vitest';
import type { PersistentVolumeClaim } from '../src/index.js';
import { pvcReadiness } from '../src/index.js';

const pvc = (
  phase: 'Pending' | 'Bound' | 'Lost',
  mode: 'Block' | 'Filesystem' = 'Filesystem',
): PersistentVolumeClaim => ({
  metadata: { name: 'claim-d1', uid: 'pvc-uid' },
  spec: {
    volumeMode: mode,
    accessModes: ['ReadWriteMany'],
    resources: { requests: { storage: '1Gi' } },
  },
  status: { phase, capacity: { storage: '1Gi' } },
});

describe('pvcReadiness', () => {
  it.each([
    [
      'no PVC',
      { pvc: undefined },
      {
        ready: false,
        phase: 'Pending',
        reason: 'FailedPvcNotFound',
        message: 'PVC claim-d1 not found',
      },
    ],
    [
      'PVC Pending',
      { pvc: pvc('Pending') },
      { ready: false, reason: 'PVCNotReady', message: 'PVC is in phase Pending' },
    ],
    [
      'PVC Lost',
      { pvc: pvc('Lost') },
      { ready: false, reason: 'PVCNotReady', message: 'PVC is in phase Lost' },
    ],
    [
      'Bound',
      { pvc: pvc('Bound') },
      { ready: true, mode: 'Filesystem', pvcUID: 'pvc-uid', waitForFirstConsumer: false },
    ],
    ['Bound block', { pvc: pvc('Bound', 'Block') }, { ready: true, mode: 'Block' }],
    [
      'DV importing',
      {
        pvc: pvc('Bound'),
        dataVolume: {
          metadata: { name: 'dv1' },
          status: { phase: 'ImportInProgress', progress: '45.10%' },
        },
      },
      {
        ready: false,
        reason: 'PVCNotReady',
        message: 'DataVolume dv1 is in phase ImportInProgress (45.10%)',
      },
    ],
    [
      'DV Succeeded',
      {
        pvc: pvc('Bound'),
        dataVolume: { metadata: { name: 'dv1' }, status: { phase: 'Succeeded' } },
      },
      { ready: true },
    ],
    [
      'DV WaitForFirstConsumer',
      {
        pvc: pvc('Pending'),
        dataVolume: { metadata: { name: 'dv1' }, status: { phase: 'WaitForFirstConsumer' } },
      },
      { ready: true, waitForFirstConsumer: true },
    ],
    [
      'DV PendingPopulation',
      {
        pvc: pvc('Pending'),
        dataVolume: { metadata: { name: 'dv1' }, status: { phase: 'PendingPopulation' } },
      },
      { ready: true, waitForFirstConsumer: true },
    ],
    [
      'WFFC storage class',
      { pvc: pvc('Pending'), bindingMode: 'WaitForFirstConsumer' as const },
      { ready: true, waitForFirstConsumer: true },
    ],
  ])('%s', (_what, input, expected) => {
    expect(pvcReadiness({ claimName: 'claim-d1', ...input })).toMatchObject(expected);
  });

  it('reports the claim info', () => {
    const r = pvcReadiness({ claimName: 'claim-d1', pvc: pvc('Bound') });
    expect(r.ready && r.claimInfo).toEqual({
      claimName: 'claim-d1',
      volumeMode: 'Filesystem',
      accessModes: ['ReadWriteMany'],
      capacity: { storage: '1Gi' },
      requests: { storage: '1Gi' },
    });
  });
});
