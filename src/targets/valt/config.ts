// The `targets.NAME` block of a Valt target (type: valt): the records API v3, usually with
// auth: { login: …, send_as: { query: access_token } }.
import { z } from 'zod';
import { describeInput, MiB, required, section, size } from '../../config/fields.js';
import { targetBlock } from '../../config/target-keys.js';

function scalarString(v: unknown): string {
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return String(v);
  throw new Error(`expected a string, got ${describeInput(v)}`);
}

export const valtConfig = targetBlock('valt', {
  // Bytes per POST (one Content-Range chunk). Default 8MiB, at least 1MiB.
  chunk_size: required(size({ min: 1 * MiB }), '8MiB'),
  // Optional additional-information template fields of create-upload: { "1": "Field value", … }.
  template: z.record(z.string(), required(scalarString)).optional(),
  // Optional extra sharing: { users: [1, 2], groups: [4] } (numeric ids).
  share: section({
    users: z.array(z.int().min(1)).optional(),
    groups: z.array(z.int().min(1)).optional(),
  }).optional(),
});

export type ValtConfig = z.output<typeof valtConfig>;
