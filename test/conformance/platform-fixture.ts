/**
 * What the conformance suite needs from each platform's emulator. One fixture per platform
 * (test/conformance/fixtures/<platform>.ts); the suite (conformance.test.ts) runs the same
 * scenarios through the real daemon against each of them.
 */
import type { Arrival } from '../emulators/json-server.js';
import type { S3Store } from '../emulators/s3-store.js';

/** A video as the platform holds it once the upload is complete. */
export interface ReceivedVideo {
  /** SHA-256 of the bytes the platform assembled. */
  sha256: string;
  size: number;
  /** The metadata as the platform received it (title, tags, camera…), for assertions. */
  metadata: Record<string, unknown>;
}

/**
 * A video of the test's manifest. Platforms see different parts of it (ALO the video id as
 * file_id, Aionvision the file name, TruVideo tags, Valt the record name with the camera), so
 * each fixture recognises a video by whatever its platform received.
 */
export interface VideoRef {
  id: string;
  incidentId: string;
  incidentTitle: string;
  file: string;
  cameraName: string;
  size: number;
}

export interface PlatformSite {
  /** The `targets.<name>` block for the daemon's config (type, base_url, auth, limits…). */
  targetConfig: Record<string, unknown>;
  /** Every request the platform's own server received (logins included; not those to the S3 store). */
  readonly arrivals: readonly Arrival[];
  /** The completed video, as the platform holds it (the latest, when it was uploaded again); undefined while it is not complete. */
  received(video: VideoRef): Promise<ReceivedVideo | undefined>;
  /** The video ids the platform's last incident report lists as uploaded and failed (platforms with reports: ALO). */
  incidentReport?(incidentId: string): { uploaded: string[]; failed: string[] } | undefined;
  /** How many incident reports the platform refused with a 4xx (platforms with reports). */
  refusedReports?(): number;
  /** How many completed copies of the video the platform holds: 1 once delivered, never more. */
  completions(video: VideoRef): number;
  /**
   * Number of part/chunk bodies the platform accepted, by video id and part number: the
   * "finished parts are not sent again" check after a SIGKILL.
   */
  acceptedParts(video: VideoRef): Map<number, number>;
  /** The next `count` part bodies are refused with a 503 (or the platform's throttling status). */
  failNextParts(count: number): void;
  /** The next `count` part bodies have their connection reset mid-body. */
  resetNextParts(count: number): void;
  /** Every URL handed out from now on expires after `seconds` (platforms without URLs: no-op). */
  setUrlExpiry(seconds: number): void;
  /** Every part answer is delayed by `ms` (makes a SIGKILL land mid-upload). */
  setLatency(ms: number): void;
  /** Uploads of this video are refused for good with a 4xx carrying this message. */
  refuseVideo(video: VideoRef, message: string): void;
  /** Remote uploads that were started and neither completed nor aborted. */
  openUploads(): number;
  close(): Promise<void>;
}

export interface PlatformFixture {
  /** `alo`, `aionvision`, `truvideo`, `valt`. */
  type: string;
  /** Starts the emulator on the shared S3 store (platforms that take the bytes themselves ignore it). */
  start(store: S3Store): Promise<PlatformSite>;
  /** What the metadata the platform received for the video must contain (a subset, as toMatchObject reads it). */
  expectedMetadata(video: VideoRef): Record<string, unknown>;
  /** What this platform cannot do; the suite skips nothing silently: it asserts the documented alternative. */
  limits: { presignedUrls: boolean; abortsGivenUp: boolean };
}
