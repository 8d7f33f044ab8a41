import { describe, expect, it } from 'vitest';
import { decodeToken, encodeToken, parseWorkSubject, Stage, workSubject } from '../src/index.js';

describe('subject tokens', () => {
  it('round-trips a VMI name with dots', () => {
    expect(encodeToken('my.vm')).toBe('my_2evm');
    expect(decodeToken('my_2evm')).toBe('my.vm');
    const subject = workSubject({
      stage: Stage.NodeMounter,
      node: 'node-1',
      namespace: 'ns',
      vmi: 'my.vm',
      volume: 'data',
    });
    expect(parseWorkSubject(subject)).toEqual({
      ok: true,
      value: {
        stage: 'node-mounter',
        node: 'node-1',
        namespace: 'ns',
        vmi: 'my.vm',
        volume: 'data',
      },
    });
  });
});
