// The `targets.NAME` block of an ALO target (type: alo): the VMS incidents API of ALO.
import type { z } from 'zod';
import { MiB, required, size } from '../../config/fields.js';
import { targetBlock } from '../../config/target-keys.js';

export const aloConfig = targetBlock('alo', {
  // Files of at least this size use create_multipart_upload/upload_urls/complete; smaller
  // ones one PUT. Default 100MiB (ALO's own "100+ MB" line), at least 5MiB (S3's smallest part).
  multipart_threshold: required(size({ min: 5 * MiB }), '100MiB'),
});

export type AloConfig = z.output<typeof aloConfig>;
