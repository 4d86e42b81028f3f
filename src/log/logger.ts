/**
 * JSON logs on stdout (pino). Every line has an `event` name (`upload.part.done`) and the ids
 * that let an operator follow one video: `incidentId`, `videoId`, `target`, `uploadId`, `part`.
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';
import { redactText } from './redact.js';

export type { Logger };

export function createLogger(level: LevelWithSilent = 'info', destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'vms-uplink' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      serializers: { err: serializeError },
      hooks: {
        // The last line of defence: whatever a caller put in a message, secrets leave masked.
        logMethod(args, method) {
          method.apply(this, args.map((a) => (typeof a === 'string' ? redactText(a) : a)) as Parameters<typeof method>);
        },
      },
      redact: { paths: ['*.token', '*.password', '*.authorization', 'headers.authorization'], censor: '***' },
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}

export function serializeError(err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { message: redactText(String(err)) };
  const out: Record<string, unknown> = { type: err.name, message: redactText(err.message) };
  const kind = (err as { kind?: unknown }).kind;
  if (kind) out.kind = kind;
  const code = (err as { code?: unknown }).code;
  if (code) out.code = code;
  return out;
}

/** A short, secret-free description of an error for the ledger and `status`. */
export function describeError(err: unknown): string {
  return redactText(err instanceof Error ? err.message : String(err));
}
