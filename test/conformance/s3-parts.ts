/**
 * For the platforms whose parts go straight to the S3 store through presigned URLs (ALO,
 * Aionvision, TruVideo): the store is where parts are counted, delayed and broken.
 */
import type { S3Fault, S3RequestRecord, S3Store } from '../emulators/s3-store.js';
import type { PlatformSite } from './platform-fixture.js';

/** Part PUTs the store accepted among those of one video, by part number; a single PUT is part 1. */
export function acceptedPuts(store: S3Store, ofVideo: (r: S3RequestRecord) => boolean): Map<number, number> {
  const counts = new Map<number, number>();
  for (const r of store.requests) {
    if (r.method !== 'PUT' || r.status !== 200 || !ofVideo(r)) continue;
    const n = r.partNumber ?? 1;
    counts.set(n, (counts.get(n) ?? 0) + 1);
  }
  return counts;
}

/** The PlatformSite hooks that act on part bodies, carried out by the store. */
export function storeFaults(store: S3Store): Pick<PlatformSite, 'failNextParts' | 'resetNextParts' | 'setLatency'> {
  const times = (count: number, fault: S3Fault): S3Fault[] => Array.from({ length: count }, () => ({ ...fault }));
  return {
    failNextParts: (count) => store.injectFaults(...times(count, { kind: 'status', status: 503, code: 'SlowDown' })),
    resetNextParts: (count) => store.injectFaults(...times(count, { kind: 'reset-midbody', afterBytes: 64 * 1024 })),
    setLatency: (ms) => store.setLatency(ms),
  };
}
