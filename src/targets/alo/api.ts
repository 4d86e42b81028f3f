/**
 * ALO's wire types (the VMS incidents API document): what its API answers, validated before use.
 */
import { z } from 'zod';

export const CreateMultipartResponse = z.object({
  s3_key: z.string().min(1),
  upload_id: z.string().min(1),
});

export const UploadUrlsResponse = z.object({
  incident_id: z.string().optional(),
  /** -1 means no limit (assumed: the document shows -1 and says nothing more). */
  max_upload_size_mb: z.number().optional(),
  uploads: z.record(
    z.string(),
    z.object({
      s3_key: z.string().min(1),
      /** An array for multipart uploads, a single URL for a single PUT (as the seed's example). */
      signed_urls: z.union([z.string().min(1), z.array(z.string().min(1))]),
    }),
  ),
});

export const CompleteResponse = z.object({ s3_key: z.string().optional(), upload_id: z.string().optional() }).passthrough();

export const AnyResponse = z.unknown();

/** One video of `PUT /vms/incidents/{id}`: `s3_key` for uploaded videos, `errors` for failed ones. */
export interface AloVideo {
  id: string;
  started_at?: string;
  ended_at?: string;
  camera_id?: string;
  camera_name?: string;
  camera_description?: string;
  camera_latitude?: number;
  camera_longitude?: number;
  s3_key?: string;
  s3_thumbnail_key?: string;
  errors?: string[];
}

export interface AloIncidentBody {
  vms_incident: {
    title?: string;
    description?: string;
    created_at?: string;
    updated_at?: string;
    incident_at?: string;
    latitude?: number;
    longitude?: number;
    uploaded_videos: AloVideo[];
    failed_videos: AloVideo[];
  };
}

/** The multipart session ALO opened for one file, persisted in the ledger. */
export const AloSession = z.discriminatedUnion('mode', [
  z.object({ mode: z.literal('single'), file_id: z.string(), s3_key: z.string().optional() }),
  z.object({ mode: z.literal('multipart'), file_id: z.string(), s3_key: z.string(), upload_id: z.string(), part_count: z.number().int() }),
]);
export type AloSession = z.infer<typeof AloSession>;
