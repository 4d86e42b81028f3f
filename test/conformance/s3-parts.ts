/**
 * For the platforms whose parts go straight to the S3 store through presigned URLs (ALO,
 * Aionvision, TruVideo): the store is where parts are counted, delayed and broken, and where the
 * URLs the platform handed out are recorded.
 */
import type { PresignedUrl, S3Fault, S3RequestRecord, S3Store } from '../emulators/s3-store.js';
import type { HandedOutUrl, PlatformSite } from './platform-fixture.js';

/** Which of the store's requests and URLs belong to one video (by key or by multipart upload id). */
export type OfVideo = (r: Pick<S3RequestRecord, 'key' | 'uploadId'>) => boolean;

/** Part PUTs the store accepted among those of one video, by part number; a single PUT is part 1. */
export function acceptedPuts(store: S3Store, ofVideo: OfVideo): Map<number, number> {
  const counts = new Map<number, number>();
  for (const r of store.requests) {
    if (r.method !== 'PUT' || r.status !== 200 || !ofVideo(r)) continue;
    const n = r.partNumber ?? 1;
    counts.set(n, (counts.get(n) ?? 0) + 1);
  }
  return counts;
}

/** The URLs the store minted for one video's parts, in order; a single PUT's URL is part 1's. */
export function presignedFor(store: S3Store, ofVideo: OfVideo): HandedOutUrl[] {
  return store.presigned.filter((p: PresignedUrl) => ofVideo(p)).map((p) => ({ part: p.partNumber ?? 1, url: p.url, at: p.at }));
}

/** PUTs of one video S3 refused because their URL had expired. */
export function expiredPuts(store: S3Store, ofVideo: OfVideo): number {
  return store.requests.filter((r) => r.method === 'PUT' && r.status === 403 && r.message === 'Request has expired' && ofVideo(r)).length;
}

/** PUTs of one video that reached the store (whatever their answer) after `since` (epoch ms). */
export function putsSince(store: S3Store, ofVideo: OfVideo, since: number): number {
  return store.requests.filter((r) => r.method === 'PUT' && r.at > since && ofVideo(r)).length;
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

/** The next part PUT is stored but never answered; which part that was, once it is stored. */
export function storeHeldAnswers(
  store: S3Store,
): Pick<PlatformSite, 'holdNextPartAnswer'> & { heldPart(ofVideo: OfVideo): number | undefined } {
  return {
    holdNextPartAnswer: () => store.injectFaults({ kind: 'hold-answer' }),
    heldPart: (ofVideo) => {
      const held = store.requests.find((r) => r.code === 'AnswerHeld' && ofVideo(r));
      return held && (held.partNumber ?? 1);
    },
  };
}
