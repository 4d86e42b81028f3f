/**
 * Valt's wire types (records API v3): what its records API answers, validated before use, and
 * the multipart/form-data envelope a chunk travels in.
 *
 * The document's examples wrap some answers in `data` and not others: every schema here reads both.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { z } from 'zod';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `{ … }` and `{ data: { … } }` read the same. */
function dataOrSelf<S extends z.ZodType>(schema: S) {
  return z.preprocess((body) => (isObject(body) && isObject(body.data) ? body.data : body), schema);
}

/** Record and video ids are UUID strings in the seed's examples; a numeric id is taken as its decimal text. */
const Id = z.union([z.string().min(1), z.int().nonnegative()]).transform(String);

/** `POST /records/create-upload` → the record and its video(s). */
export const RecordResponse = dataOrSelf(z.object({ id: Id, videos: z.array(Id).min(1, { error: 'no video id' }) }));

/** A chunk's answer: anything (the 2xx is the acknowledgement); the last one may carry the download `url`. */
const ChunkResponse = dataOrSelf(z.object({ url: z.string().min(1) }));

/** The download URL in a chunk's answer, if there is one. */
export function chunkUrl(text: string): string | undefined {
  try {
    const parsed = ChunkResponse.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data.url : undefined;
  } catch {
    return undefined;
  }
}

/** The body of `POST /records/create-upload`. */
export interface CreateUploadBody {
  name: string;
  /** Additional-information template fields, field id → value. */
  template?: Record<string, string>;
  share?: { users: number[]; groups: number[] };
}

/** The record Valt opened for one video, persisted in the ledger. */
export const ValtSession = z.object({
  record_id: z.string().min(1),
  video_id: z.string().min(1),
  /** The download URL the last chunk's answer carried (secret query values masked). */
  url: z.string().optional(),
});
export type ValtSession = z.infer<typeof ValtSession>;

/** `bytes FIRST-LAST/TOTAL`, the last byte inclusive (RFC 9110 §14.4; the seed's example is off by one). */
export function contentRange(offset: number, size: number, total: number): string {
  return `bytes ${offset}-${offset + size - 1}/${total}`;
}

/**
 * One `file` field of multipart/form-data around a part's bytes, streamed: the envelope's
 * length is known up front, so the request carries an exact Content-Length.
 */
export class FileForm {
  readonly contentType: string;
  private readonly head: Buffer;
  private readonly tail: Buffer;

  constructor(filename: string, fileContentType: string) {
    const boundary = `vms-uplink-${randomBytes(16).toString('hex')}`;
    this.contentType = `multipart/form-data; boundary=${boundary}`;
    this.head = Buffer.from(
      `--${boundary}\r\n` +
        `Content-Disposition: form-data; name="file"; filename="${escapeQuoted(filename)}"\r\n` +
        `Content-Type: ${fileContentType}\r\n\r\n`,
      'utf8',
    );
    this.tail = Buffer.from(`\r\n--${boundary}--\r\n`, 'utf8');
  }

  /** Content-Length of the whole body for a file part of `size` bytes. */
  length(size: number): number {
    return this.head.length + size + this.tail.length;
  }

  /** The body: the envelope around `part`, read as the request goes out (errors of `part` come through). */
  body(part: NodeJS.ReadableStream): Readable {
    const { head, tail } = this;
    return Readable.from(
      (async function* () {
        yield head;
        for await (const chunk of part) yield chunk;
        yield tail;
      })(),
      { objectMode: false },
    );
  }
}

/** A file name in a quoted header parameter, as browsers encode it (WHATWG HTML, multipart/form-data). */
function escapeQuoted(name: string): string {
  return name.replace(/"/g, '%22').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}
