/**
 * The contract every platform module implements.
 *
 * The upload engine owns the loop: it keeps `upload.concurrency` parts in flight across all
 * uploads and persists every state change in the ledger; the pacer (upload/pacer.ts) does all
 * waiting and retrying. A target only speaks its platform's protocol and *classifies* what went
 * wrong by throwing a {@link TargetError} with an {@link ErrorKind}; it never sleeps or retries
 * on its own.
 *
 * Life of one upload (one file for one target):
 *
 *   layout()  → start() → sendPart() × N → complete()        (abort() when given up)
 *
 * - `start` is called once per upload; its {@link SessionState} is persisted before any part is
 *   sent, so after a crash the same remote session is continued, never started twice.
 * - `sendPart` resolves only when the platform acknowledged the part (an S3 ETag, a chunk
 *   confirmation, an HTTP 200 for a chunk POST); only then does the ledger mark it done.
 * - Presigned URLs are never persisted: a target keeps them in memory and asks for new ones when
 *   they are missing (after a restart) or refused (`new-url`).
 */
import type { Readable } from 'node:stream';
import type { Secrets } from '../log/redact.js';
import type { PartLayout } from '../plan/part-plan.js';
import type { HttpClient } from '../upload/http.js';
import type { ManifestIncident, ManifestVideoInfo } from '../watch/manifest.js';

/** How a failure must be handled. Decided once, where the response is read. */
export type ErrorKind =
  /** Network error, 5xx, 429, timeout: try again after a backoff. */
  | 'retryable'
  /** A presigned URL was refused (403) or expired: ask the platform for a new one, then retry. */
  | 'new-url'
  /** The platform refused our credentials (401): log in again, then retry. */
  | 'reauth'
  /** The platform refused the request for good (other 4xx, a limit): fail this upload with its message. */
  | 'permanent'
  /**
   * The box's own setup stops the call before the platform sees it (a TLS certificate it does not
   * trust): no retry soon will help, and failing the upload would lose it. Tried again at the
   * longest backoff (upload.retry_max), so that a fixed configuration recovers; shown in `status`
   * and `/healthz` meanwhile.
   */
  | 'configuration'
  /**
   * The platform accepted the request and is still working on it (TruVideo assembling a completed
   * upload): ask again after `retryAfterMs`. Not a failure: it is polled, never backed off.
   */
  | 'not-ready';

export class TargetError extends Error {
  override readonly name = 'TargetError';
  constructor(
    readonly kind: ErrorKind,
    message: string,
    readonly details: {
      status?: number;
      retryAfterMs?: number;
      cause?: unknown;
      /** A short, stable label of why, for the retries metric (`proxy_refused`); default: from the status or error code. */
      reason?: string;
    } = {},
  ) {
    super(message, { cause: details.cause });
  }
}

export type FileRole = 'video' | 'thumbnail';

/** Incident fields as the manifest gave them; what platforms show or receive as metadata. */
export type IncidentInfo = ManifestIncident;

/** A video's fields as the manifest gave them, without its files and export errors. */
export type VideoInfo = ManifestVideoInfo;

/** One file to send, as the ledger knows it once it settled. */
export interface SourceFile {
  role: FileRole;
  /** Absolute path on the box. */
  path: string;
  /** Base name as the VMS wrote it. */
  name: string;
  size: number;
  /** The content's identity; null until the identity pass (which runs while parts are sent) ends. */
  sha256: string | null;
  /** What every read of the file is checked against (size, mtime, ctime, inode): see plan/file-stamp.ts. */
  stamp: string;
  contentType: string;
  incident: IncidentInfo;
  video: VideoInfo;
}

/** Remote identifiers of one upload (upload id, key, media id…); JSON, persisted in the ledger. */
export type SessionState = Record<string, unknown>;

export interface PartToSend {
  number: number;
  offset: number;
  size: number;
}

export interface SendPartRequest {
  session: SessionState;
  file: SourceFile;
  part: PartToSend;
  /** A fresh read stream of exactly this part's bytes; call it once per attempt. */
  body: () => Readable;
  /** The MD5 (hex) of what the body sent, once it ended: what the platform must have received. */
  sentMd5: () => string;
  signal: AbortSignal;
}

export interface PartReceipt {
  /** What the platform returned for this part (S3 ETag), if anything. */
  etag: string | null;
  /** Set when sending the part changed the remote identifiers (a single PUT's key). */
  session?: SessionState;
}

export interface CompletedPart {
  number: number;
  size: number;
  etag: string | null;
}

/** What the platform knows the upload as, once complete (e.g. ALO's `s3_key`). */
export type UploadResult = Record<string, string>;

export interface StartResult {
  session: SessionState;
  /** Set when the platform, not us, decides the part layout. */
  layout?: PartLayout;
  /**
   * false when the start opened nothing remote (ALO's single PUT: the session is derived from the
   * file): there is nothing to continue after a crash, so the ledger need not record it first.
   */
  remote?: boolean;
  /**
   * A failure the start rode out, its work left for later (ALO: the URLs asked for early are asked
   * for again with the first part). The engine logs it: a target has no log of its own.
   */
  deferredError?: TargetError;
}

/** What every target is made with. */
export interface TargetDeps {
  http: HttpClient;
  /** Credentials and issued tokens are registered here, so that no log line or error shows them. */
  secrets: Secrets;
}

/** A video's outcome for one target, as an incident report shows it. */
export type ReportedVideo =
  | { video: VideoInfo; outcome: 'uploaded'; results: Partial<Record<FileRole, UploadResult>> }
  | { video: VideoInfo; outcome: 'failed'; errors: string[] };

export interface IncidentReport {
  incident: IncidentInfo;
  /** Videos in a final state for this target; videos still in progress are left out. */
  videos: ReportedVideo[];
}

export interface Target {
  /** The key under `targets:` in the configuration. */
  readonly name: string;
  /** Which of a video's files this platform takes. */
  readonly roles: readonly FileRole[];

  /** The platform appends parts (Valt): they are sent one at a time, in order. */
  readonly sequentialParts?: boolean;

  /**
   * Refuses a file before any call (format, size). Returns the reason, or null to accept.
   */
  refuse(file: SourceFile): string | null;

  /** The part layout for this file; null when the platform decides it in `start`. */
  layout(file: SourceFile, preferredPartSize: number): PartLayout | null;

  start(file: SourceFile, layout: PartLayout | null, signal: AbortSignal): Promise<StartResult>;

  sendPart(request: SendPartRequest): Promise<PartReceipt>;

  /** Finishes the upload; an upload the platform already completed counts as success. */
  complete(session: SessionState, file: SourceFile, parts: CompletedPart[], signal: AbortSignal): Promise<UploadResult>;

  /** Releases the remote upload of something given up. Must tolerate an unknown or finished session. */
  abort(session: SessionState, file: SourceFile, signal: AbortSignal): Promise<void>;

  /**
   * After a restart, the parts the platform already holds (Aionvision's progress, TruVideo's
   * registered parts), so a part acknowledged just before a crash is not sent again. Platforms
   * without such a call rely on the ledger alone.
   */
  confirmedParts?(session: SessionState, file: SourceFile, signal: AbortSignal): Promise<Array<{ number: number; etag: string | null }>>;

  /** Platforms that keep incidents (ALO) receive the whole incident after every change. */
  report?(report: IncidentReport, signal: AbortSignal): Promise<void>;

  close(): Promise<void>;
}
