/**
 * Aionvision's wire types (video uploads v2): what its API answers, validated before use.
 */
import { z } from 'zod';

/** "Supported Formats: MP4, MOV, M4V, WebM, AVI": the container as sniffed, and the file name's extension. */
export const SUPPORTED_CONTENT_TYPES: ReadonlyMap<string, string> = new Map([
  ['video/mp4', 'MP4'],
  ['video/quicktime', 'MOV'],
  ['video/x-m4v', 'M4V'],
  ['video/webm', 'WebM'],
  ['video/x-msvideo', 'AVI'],
]);
export const SUPPORTED_EXTENSIONS: ReadonlySet<string> = new Set(['.mp4', '.mov', '.m4v', '.webm', '.avi']);

/**
 * "Maximum 10GB per video. 10MB chunks." The document's own figures are binary (its 10MB chunk is
 * `size_bytes: 10485760`, its example video 524288000 = 500 MiB), so 10GB is read as 10 GiB.
 */
export const MAX_VIDEO_BYTES = 10 * 1024 ** 3;

/** Step 1: `{ media_id, upload_id, chunks: [{ chunk_number, upload_url, size_bytes, … }] }`. */
export const InitiateResponse = z.object({
  media_id: z.string().min(1),
  upload_id: z.string().min(1),
  chunks: z
    .array(
      z.object({
        chunk_number: z.number().int().min(1),
        upload_url: z.string().min(1),
        size_bytes: z.number().int().min(0),
      }),
    )
    .min(1),
});
export type InitiateResponse = z.infer<typeof InitiateResponse>;

/** `chunks/retry`: a new presigned URL for one chunk (the document names no fields: this shape is assumed). */
export const RetryResponse = z.object({
  chunk_number: z.number().int().min(1),
  upload_url: z.string().min(1),
});

/** `progress/{media_id}`: at least the status and the chunks already confirmed (assumed, as above). */
export const ProgressResponse = z.object({
  status: z.string(),
  confirmed_chunks: z.array(z.number().int().min(1)),
});

/** Progress statuses that mean the upload was completed (and maybe is being processed). */
export const COMPLETED_STATUSES: ReadonlySet<string> = new Set([
  'completed',
  'complete',
  'uploaded',
  'processing',
  'processed',
  'ready',
  'done',
]);

export const AnyResponse = z.unknown();

/** The remote upload of one video, persisted in the ledger; its chunk URLs are not. */
export const AionSession = z.object({
  media_id: z.string().min(1),
  upload_id: z.string().min(1),
});
export type AionSession = z.infer<typeof AionSession>;
