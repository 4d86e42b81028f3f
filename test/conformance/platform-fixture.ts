/**
 * What the conformance suite needs from each platform's emulator. One fixture per platform
 * (test/conformance/fixtures/<platform>.ts); the suite (suite.ts) runs the same scenarios through
 * the real daemon against each of them.
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

/** A presigned URL the platform handed out for one part of a video. */
export interface HandedOutUrl {
  part: number;
  url: string;
  /** Epoch milliseconds when it was minted. */
  at: number;
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
   * How many remote uploads (S3 multipart uploads, media items, records) the platform opened for
   * the video: 1 when an upload was continued after a restart rather than started again.
   */
  uploadsOpened(video: VideoRef): number;
  /**
   * Number of part/chunk bodies the platform accepted, by video id and part number: the
   * "finished parts are not sent again" check after a SIGKILL.
   */
  acceptedParts(video: VideoRef): Map<number, number>;
  /**
   * Platforms that take a part in two steps (Aionvision: the PUT to S3, then its confirm): how many
   * times each part was confirmed. Once each, whatever happened to the daemon meanwhile.
   */
  confirmations?(video: VideoRef): Map<number, number>;
  /**
   * What the daemon authenticates to the platform with: the credential the fixture configured,
   * then every token the platform issued for it, in order. None of them may ever reach S3.
   */
  credentials(): string[];
  /** The presigned URLs handed out for the video's parts, in order (none on platforms without URLs). */
  urlsHandedOut(video: VideoRef): HandedOutUrl[];
  /**
   * Part bodies of the video refused because what authorised them had expired: S3's `Request has
   * expired` for a presigned URL, the platform's 401 for a login token sent with the part (Valt).
   */
  expiredRefusals(video: VideoRef): number;
  /** The next `count` part bodies are refused with a 503 (or the platform's throttling status). */
  failNextParts(count: number): void;
  /** The next `count` part bodies have their connection reset mid-body. */
  resetNextParts(count: number): void;
  /** The next part the platform receives is kept (acknowledged on its side), but its answer never leaves. */
  holdNextPartAnswer(): void;
  /** The number of the part holdNextPartAnswer held, once the platform kept it; undefined before. */
  heldPart(video: VideoRef): number | undefined;
  /**
   * The next `count` parts are kept, but the connection is dropped before their answer: the daemon
   * cannot tell them from parts that never arrived (platforms without ETags, see limits.etags).
   */
  loseNextPartAnswers?(count: number): void;
  /** Every URL handed out from now on expires after `seconds` (platforms with presigned URLs). */
  setUrlExpiry(seconds: number): void;
  /** Every login token issued from now on expires after `seconds` (platforms whose parts carry the token: Valt). */
  setTokenExpiry?(seconds: number): void;
  /** Every part answer is delayed by `ms` (makes a SIGKILL land mid-upload). */
  setLatency(ms: number): void;
  /**
   * Uploads of this video are refused for good with a 4xx carrying this message, once the remote
   * upload exists and holds some of its parts (at a part or at complete, as the real platform could).
   */
  refuseVideo(video: VideoRef, message: string): void;
  /** How many calls the platform refused with refuseVideo's message. */
  refusals(video: VideoRef): number;
  /** Part bodies of the video the platform received after it first refused it. */
  partsAfterRefusal(video: VideoRef): number;
  /** Remote uploads that were started and neither completed nor aborted. */
  openUploads(): number;
  close(): Promise<void>;
}

/**
 * What a platform cannot do, or does its own way. The suite skips nothing for it: where a
 * platform lacks something, the suite asserts the documented alternative instead.
 */
export interface PlatformLimits {
  /** Parts go to S3 on presigned URLs the platform hands out (Valt: to its own API, with the login token). */
  presignedUrls: boolean;
  /** Each part's answer carries an ETag, S3's MD5 of what it stored (Valt answers none: nothing to check a chunk against). */
  etags: boolean;
  /** One call hands out the URLs of every part at once (ALO's upload_urls), not only of the parts asked for. */
  urlsForAllParts: boolean;
  /** A given-up upload can be released (TruVideo's and Valt's APIs have no abort). */
  abortsGivenUp: boolean;
  /** The platform tells which parts it holds (Aionvision's progress, TruVideo's registered parts); ALO and Valt do not. */
  tellsHeldParts: boolean;
  /** The platform appends parts as they come, so the daemon sends one at a time (Valt). */
  sequentialParts: boolean;
}

export interface PlatformFixture {
  /** `alo`, `aionvision`, `truvideo`, `valt`. */
  type: string;
  /** Starts the emulator on the shared S3 store (platforms that take the bytes themselves ignore it). */
  start(store: S3Store): Promise<PlatformSite>;
  /** What the metadata the platform received for the video must contain (a subset, as toMatchObject reads it). */
  expectedMetadata(video: VideoRef): Record<string, unknown>;
  limits: PlatformLimits;
}
