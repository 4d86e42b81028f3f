// The `targets.NAME` block of a TruVideo target (type: truvideo): Upload V3.
import type { z } from 'zod';
import { duration, required, text } from '../../config/fields.js';
import { targetBlock } from '../../config/target-keys.js';

function moreUrlsPath(v: unknown): string {
  const s = text(v).trim();
  if (!s.startsWith('/')) throw new Error('must start with /');
  if (!s.includes('{uploadId}')) throw new Error('must contain {uploadId}');
  return s;
}

export const truvideoConfig = targetBlock('truvideo', {
  // Endpoint asking for more presigned URLs; `{uploadId}` is replaced. The TruVideo Upload V3
  // document does not name it: this is the path the daemon assumes unless told otherwise.
  more_urls_path: required(moreUrlsPath, '/upload/{uploadId}/presigned-urls'),
  // Seconds between status polls after complete (202 Accepted), with capped backoff. Default 5.
  poll_interval: required(duration({ positive: true }), 5),
  // Seconds of polling after complete before the wait is given up and retried (complete again,
  // then the status). Default 3600.
  poll_timeout: required(duration({ positive: true }), 3600),
});

export type TruvideoConfig = z.output<typeof truvideoConfig>;
