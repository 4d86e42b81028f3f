/**
 * Splitting a file into parts that a platform will accept.
 *
 * S3 (behind ALO, Aionvision and TruVideo) requires every part but the last to be at least
 * 5 MiB, at most 5 GiB, and at most 10,000 parts. The preferred size from `upload.part_size`
 * wins when the limits allow it; otherwise the part grows just enough to fit the part count.
 */
export const MiB = 1024 * 1024;

export interface PartSlice {
  number: number;
  offset: number;
  size: number;
}

export type PartLayout = readonly PartSlice[];

export interface PartLimits {
  minPartSize: number;
  maxPartSize: number;
  maxParts: number;
}

export const S3_LIMITS: PartLimits = { minPartSize: 5 * MiB, maxPartSize: 5 * 1024 * MiB, maxParts: 10_000 };

export class PlanError extends Error {
  override readonly name = 'PlanError';
}

/** Picks the part size: the preferred one clamped to the limits, grown to fit `maxParts`. */
export function choosePartSize(fileSize: number, preferred: number, limits: PartLimits): number {
  let partSize = Math.min(Math.max(preferred, limits.minPartSize), limits.maxPartSize);
  const needed = Math.ceil(fileSize / limits.maxParts);
  if (needed > partSize) {
    // Round up to a whole MiB so part sizes stay readable in logs and status.
    partSize = Math.ceil(needed / MiB) * MiB;
  }
  if (partSize > limits.maxPartSize) {
    throw new PlanError(`file of ${fileSize} bytes needs more than ${limits.maxParts} parts of at most ${limits.maxPartSize} bytes`);
  }
  return partSize;
}

/** Cuts a file into parts of `partSize` bytes (the last one shorter); an empty file is one empty part. */
export function sliceParts(fileSize: number, partSize: number): PartLayout {
  const count = Math.max(1, Math.ceil(fileSize / partSize));
  const parts: PartSlice[] = [];
  for (let i = 0; i < count; i++) {
    const offset = i * partSize;
    parts.push({ number: i + 1, offset, size: Math.min(partSize, fileSize - offset) });
  }
  return parts;
}

export function planParts(fileSize: number, preferred: number, limits: PartLimits = S3_LIMITS): PartLayout {
  return sliceParts(fileSize, choosePartSize(fileSize, preferred, limits));
}

/** The whole file as one part (a single PUT). */
export function singlePart(fileSize: number): PartLayout {
  return [{ number: 1, offset: 0, size: fileSize }];
}
