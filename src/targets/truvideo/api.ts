/**
 * TruVideo Upload V3's wire types: what its API is sent and answers,
 * validated before use.
 */
import { z } from 'zod';

/** `media.fileType` values of type VIDEO, by the file extension that carries them. */
export const VIDEO_FILE_TYPES: Readonly<Record<string, string>> = {
  MP4: 'MP4',
  MOV: 'MOV',
  AVI: 'AVI',
  MKV: 'MKV',
  FLV: 'FLV',
  WMV: 'WMV',
  '3GPP': '3GPP',
  // The usual extension of 3GPP files; the document's type name for them is 3GPP.
  '3GP': '3GPP',
  WEBM: 'WEBM',
};

/** Keys the platform keeps for itself in `metadata` (its document reserves them): never sent. */
export const RESERVED_METADATA_KEYS = ['failureReason', 'failureTimestamp'] as const;

/** The seed gives creator 0..255 characters; the title's limit is unstated and taken as the same. */
export const MAX_TEXT_LENGTH = 255;

export const UPLOAD_STATUSES = ['INITIALIZED', 'PARTIAL', 'PENDING_COMPLETE', 'COMPLETED', 'FAILED'] as const;
export type UploadStatus = (typeof UPLOAD_STATUSES)[number];

/** `POST /upload/start` body. */
export interface StartRequest {
  amountOfParts: number;
  media: {
    fileType: string;
    title: string;
    creator: string;
    duration?: number;
    resolution?: 'LOW' | 'NORMAL' | 'HIGH';
    tags: Record<string, string>;
  };
  metadata: Record<string, unknown>;
}

/** `[{ partNumber, url }]`: the start answer and (assumed) the more-URLs answer alike. */
const PresignedUrls = z.array(z.object({ partNumber: z.number().int().min(1), url: z.string().min(1) }));

export const StartResponse = z.object({
  uploadId: z.string().min(1),
  mediaId: z.string().min(1),
  /** May hold fewer URLs than parts; the rest come from the more-URLs endpoint. */
  presignedUrls: PresignedUrls.nullish().transform((v) => v ?? []),
});

export const MoreUrlsResponse = z.object({ presignedUrls: PresignedUrls });

/** A registered part; the seed names the field `eTag` in complete, so other spellings are only tolerated. */
const RegisteredPart = z
  .object({ partNumber: z.number().int().min(1), eTag: z.string().nullish(), etag: z.string().nullish(), ETag: z.string().nullish() })
  .transform((p) => ({ partNumber: p.partNumber, eTag: (p.eTag ?? p.etag ?? p.ETag ?? null)?.replace(/"/g, '') || null }));

/** `GET /upload/{uploadId}`: only what the daemon reads; the rest of the answer is ignored. */
export const UploadDetails = z.object({
  uploadId: z.string().optional(),
  mediaId: z.string().optional(),
  status: z.enum(UPLOAD_STATUSES),
  fileUrl: z.string().nullish(),
  parts: z
    .array(RegisteredPart)
    .nullish()
    .transform((v) => v ?? []),
  failureReason: z.string().nullish(),
});
export type UploadDetails = z.infer<typeof UploadDetails>;

/** The complete answers 202 with a body the seed does not show. */
export const AnyResponse = z.unknown();

/** The remote session of one file, persisted in the ledger. */
export const TruvideoSession = z.object({
  uploadId: z.string().min(1),
  mediaId: z.string().min(1),
  /** The `amountOfParts` the session was started with: which parts the more-URLs batch may ask for. */
  amountOfParts: z.number().int().min(1).optional(),
});
export type TruvideoSession = z.infer<typeof TruvideoSession>;
