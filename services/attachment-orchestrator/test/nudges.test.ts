import { afterEach, describe, expect, it, vi } from 'vitest';
import { NudgeGate } from '../src/nudges.js';

describe('NudgeGate', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  function gate(publish: (n: string) => Promise<unknown> = () => Promise.resolve()) {
    const sent: string[] = [];
    const g = new NudgeGate<string>({
      outstandingMs: 1000,
      publish: (n) => {
        sent.push(n);
        return publish(n);
      },
    });
    return { g, sent };
  }

  it('sends one nudge per VMI until a reconcile of it reads the caches', () => {
    const { g, sent } = gate();
    for (let i = 0; i < 75; i += 1) g.offer('ns/vm', `change-${i}`);
    g.offer('ns/other', 'other-1');
    expect(sent).toEqual(['change-0', 'other-1']);
    g.observed('ns/vm');
    g.offer('ns/vm', 'change-75');
    expect(sent).toEqual(['change-0', 'other-1', 'change-75']);
    g.close();
  });

  it('nudges a dirty VMI again when no reconcile here took the nudge in time', () => {
    vi.useFakeTimers();
    const { g, sent } = gate();
    g.offer('ns/vm', 'a');
    g.offer('ns/vm', 'b');
    g.offer('ns/vm', 'c');
    vi.advanceTimersByTime(999);
    expect(sent).toEqual(['a']);
    vi.advanceTimersByTime(1);
    expect(sent).toEqual(['a', 'c']);
    g.close();
  });

  it('sends nothing more for a VMI that was reconciled, and nothing after close', () => {
    vi.useFakeTimers();
    const { g, sent } = gate();
    g.offer('ns/vm', 'a');
    g.offer('ns/vm', 'b');
    g.observed('ns/vm');
    vi.advanceTimersByTime(5000);
    expect(sent).toEqual(['a']);
    g.offer('ns/vm', 'c');
    g.close();
    g.offer('ns/vm', 'd');
    vi.advanceTimersByTime(5000);
    expect(sent).toEqual(['a', 'c']);
  });

  it('retries a nudge whose publish failed', async () => {
    vi.useFakeTimers();
    let fail = true;
    const { g, sent } = gate(() =>
      fail ? Promise.reject(new Error('no bus')) : Promise.resolve(),
    );
    g.offer('ns/vm', 'a');
    await vi.advanceTimersByTimeAsync(0);
    fail = false;
    await vi.advanceTimersByTimeAsync(1000);
    expect(sent).toEqual(['a', 'a']);
    expect(g.outstanding()).toBe(1);
    g.observed('ns/vm');
    expect(g.outstanding()).toBe(0);
    g.close();
  });
});
