import { describe, expect, it } from 'vitest';
import { SettleTracker } from '../../src/watch/settle.js';

const stamp = (size: number, mtimeMs = 1_000) => ({ size, mtimeMs });

describe('SettleTracker', () => {
  it('calls the first observation changing, however old the file', () => {
    const t = new SettleTracker(10_000);
    expect(t.observe('a', stamp(5), 1_000_000)).toBe('changing');
  });

  it('settles once size and mtime are unchanged for settleMs since first seen', () => {
    const t = new SettleTracker(10_000);
    expect(t.observe('a', stamp(5), 0)).toBe('changing');
    expect(t.observe('a', stamp(5), 5_000)).toBe('changing');
    expect(t.observe('a', stamp(5), 9_999)).toBe('changing');
    expect(t.observe('a', stamp(5), 10_000)).toBe('settled');
    expect(t.observe('a', stamp(5), 50_000)).toBe('settled');
  });

  it('restarts the clock when the size changes', () => {
    const t = new SettleTracker(10_000);
    t.observe('a', stamp(5), 0);
    expect(t.observe('a', stamp(6), 8_000)).toBe('changing');
    expect(t.observe('a', stamp(6), 17_999)).toBe('changing');
    expect(t.observe('a', stamp(6), 18_000)).toBe('settled');
  });

  it('restarts the clock when only the mtime changes (rewritten in place, same size)', () => {
    const t = new SettleTracker(10_000);
    t.observe('a', stamp(5, 1_000), 0);
    expect(t.observe('a', stamp(5, 2_000), 9_000)).toBe('changing');
    expect(t.observe('a', stamp(5, 2_000), 18_000)).toBe('changing');
    expect(t.observe('a', stamp(5, 2_000), 19_000)).toBe('settled');
  });

  it('goes back to changing when a settled file changes again', () => {
    const t = new SettleTracker(1_000);
    t.observe('a', stamp(5), 0);
    expect(t.observe('a', stamp(5), 1_000)).toBe('settled');
    expect(t.observe('a', stamp(7), 1_500)).toBe('changing');
    expect(t.observe('a', stamp(7), 2_499)).toBe('changing');
    expect(t.observe('a', stamp(7), 2_500)).toBe('settled');
  });

  it('tracks keys independently, and forget starts a key over', () => {
    const t = new SettleTracker(1_000);
    t.observe('a', stamp(1), 0);
    t.observe('b', stamp(1), 500);
    expect(t.observe('a', stamp(1), 1_000)).toBe('settled');
    expect(t.observe('b', stamp(1), 1_000)).toBe('changing');
    t.forget('a');
    t.forget('never-seen');
    expect(t.observe('a', stamp(1), 5_000)).toBe('changing');
    expect(t.observe('a', stamp(1), 6_000)).toBe('settled');
  });

  it('with settleMs 0 settles on the second unchanged observation', () => {
    const t = new SettleTracker(0);
    expect(t.observe('a', stamp(1), 0)).toBe('changing');
    expect(t.observe('a', stamp(1), 0)).toBe('settled');
  });

  it('restarts the wait when the clock goes backwards', () => {
    const t = new SettleTracker(1_000);
    t.observe('a', stamp(1), 10_000);
    expect(t.observe('a', stamp(1), 5_000)).toBe('changing');
    expect(t.observe('a', stamp(1), 5_999)).toBe('changing');
    expect(t.observe('a', stamp(1), 6_000)).toBe('settled');
  });

  it('treats a NaN mtime as equal to itself', () => {
    const t = new SettleTracker(1_000);
    t.observe('a', stamp(1, Number.NaN), 0);
    expect(t.observe('a', stamp(1, Number.NaN), 1_000)).toBe('settled');
  });

  it('refuses a negative or non-finite settle time', () => {
    expect(() => new SettleTracker(-1)).toThrow(RangeError);
    expect(() => new SettleTracker(Number.NaN)).toThrow(RangeError);
    expect(() => new SettleTracker(Number.POSITIVE_INFINITY)).toThrow(RangeError);
  });
});
