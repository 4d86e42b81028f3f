import { describe, expect, it } from 'vitest';
import { choosePartSize, MiB, planParts, PlanError, S3_LIMITS, singlePart, sliceParts } from '../../src/plan/part-plan.js';

const GiB = 1024 * MiB;

function assertValid(size: number, parts: ReturnType<typeof planParts>): void {
  expect(parts.reduce((n, p) => n + p.size, 0)).toBe(size);
  parts.forEach((p, i) => {
    expect(p.number).toBe(i + 1);
    expect(p.offset).toBe(i === 0 ? 0 : parts[i - 1]!.offset + parts[i - 1]!.size);
    if (i < parts.length - 1) expect(p.size).toBeGreaterThanOrEqual(S3_LIMITS.minPartSize);
    expect(p.size).toBeLessThanOrEqual(S3_LIMITS.maxPartSize);
  });
  expect(parts.length).toBeLessThanOrEqual(S3_LIMITS.maxParts);
}

describe('part plans', () => {
  it('uses the preferred size when the limits allow it', () => {
    const parts = planParts(100 * MiB, 16 * MiB);
    expect(parts.map((p) => p.size)).toEqual([16, 16, 16, 16, 16, 16, 4].map((n) => n * MiB));
    assertValid(100 * MiB, parts);
  });

  it('raises a preferred size below 5 MiB to the S3 minimum', () => {
    expect(choosePartSize(50 * MiB, 1 * MiB, S3_LIMITS)).toBe(5 * MiB);
  });

  it('grows the part size so a huge file fits in 10,000 parts', () => {
    const size = 200 * GiB;
    const parts = planParts(size, 16 * MiB);
    expect(parts.length).toBeLessThanOrEqual(10_000);
    expect(parts[0]!.size % MiB).toBe(0);
    assertValid(size, parts);
  });

  it('handles the edges: 0 B, 1 B, exactly 5 MiB and 5 MiB + 1', () => {
    expect(planParts(0, 16 * MiB)).toEqual([{ number: 1, offset: 0, size: 0 }]);
    expect(planParts(1, 16 * MiB)).toEqual([{ number: 1, offset: 0, size: 1 }]);
    expect(planParts(5 * MiB, 5 * MiB)).toEqual([{ number: 1, offset: 0, size: 5 * MiB }]);
    const plus = planParts(5 * MiB + 1, 5 * MiB);
    expect(plus.map((p) => p.size)).toEqual([5 * MiB, 1]);
    assertValid(5 * MiB + 1, plus);
  });

  it('refuses a file that cannot fit the limits at all', () => {
    expect(() => choosePartSize(121 * 600 * MiB, 16 * MiB, { minPartSize: 5 * MiB, maxPartSize: 600 * MiB, maxParts: 120 })).toThrow(
      PlanError,
    );
  });

  it('slices exactly and keeps a single part whole', () => {
    expect(sliceParts(10, 4).map((p) => [p.offset, p.size])).toEqual([
      [0, 4],
      [4, 4],
      [8, 2],
    ]);
    expect(singlePart(123)).toEqual([{ number: 1, offset: 0, size: 123 }]);
  });
});
