/**
 * JSON logs on stdout (pino). Every line has an `event` name (`upload.part.done`) and the ids
 * that let an operator follow one video: `incidentId`, `videoId`, `target`, `uploadId`, `part`.
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';
import { redactText, Secrets } from './redact.js';

export type { Logger };

/**
 * The daemon's logger. `secrets` holds the values it must never print (the daemon registers
 * every credential and issued token there); it masks every line as the last line of defence.
 */
export function createLogger(
  level: LevelWithSilent = 'info',
  secrets: Secrets = new Secrets(),
  destination?: pino.DestinationStream,
): Logger {
  return pino(
    {
      level,
      base: { service: 'vms-uplink' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      serializers: { err: (err: unknown) => serializeError(err, secrets) },
      hooks: {
        // Whatever a caller put in a message or a field (a reason, a path, a platform's answer),
        // secrets leave masked. Errors go through serializeError.
        logMethod(args, method) {
          method.apply(this, args.map((a) => redactFields(a, secrets, 0)) as Parameters<typeof method>);
        },
      },
      redact: { paths: ['*.token', '*.password', '*.authorization', 'headers.authorization'], censor: '***' },
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}

/** Strings of a log call's arguments with secrets masked, in plain objects and arrays a few levels deep. */
function redactFields(value: unknown, secrets: Secrets, depth: number): unknown {
  if (typeof value === 'string') return secrets.text(value);
  if (depth >= 4 || value === null || typeof value !== 'object' || value instanceof Error) return value;
  if (Array.isArray(value)) return value.map((v) => redactFields(v, secrets, depth + 1));
  if (Object.getPrototypeOf(value) !== Object.prototype) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = redactFields(v, secrets, depth + 1);
  return out;
}

export function serializeError(err: unknown, secrets?: Secrets): Record<string, unknown> {
  const mask = (text: string): string => (secrets ? secrets.text(text) : redactText(text));
  if (!(err instanceof Error)) return { message: mask(String(err)) };
  const out: Record<string, unknown> = { type: err.name, message: mask(err.message) };
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
