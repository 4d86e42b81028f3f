// The `targets.NAME` block of an Aionvision target (type: aionvision): video uploads v2, where the
// server chooses the chunk layout, so nothing beyond the keys every target has.
import type { z } from 'zod';
import { targetBlock } from '../../config/target-keys.js';

export const aionvisionConfig = targetBlock('aionvision', {});

export type AionvisionConfig = z.output<typeof aionvisionConfig>;
