/**
 * Valt (its records API v3 document): each video becomes one record, created with
 * `POST /records/create-upload`, whose video receives the file in chunks of `chunk_size`: one
 * multipart/form-data POST per chunk with an RFC 9110 `Content-Range`, strictly in order, because
 * Valt appends what it receives. The last chunk completes the video; there is nothing to call
 * afterwards and nothing to abort (the API has no such call).
 *
 * The login token travels as the `access_token` query parameter (Authenticator); only the path
 * ever goes into a message, and the HTTP client masks the query of any URL it reports.
 */
import { redactUrl } from '../../log/redact.js';
import { sliceParts, type PartLayout } from '../../plan/part-plan.js';
import { Authenticator } from '../auth.js';
import { JsonApi } from '../json-api.js';
import { mediaTitle } from '../media-title.js';
import type {
  FileRole,
  PartReceipt,
  SendPartRequest,
  SessionState,
  SourceFile,
  StartResult,
  Target,
  TargetDeps,
  UploadResult,
} from '../target.js';
import { chunkUrl, contentRange, FileForm, RecordResponse, ValtSession, type CreateUploadBody } from './api.js';
import type { ValtConfig } from './config.js';

export class ValtTarget implements Target {
  readonly roles: readonly FileRole[] = ['video'];
  /** Valt appends each chunk to the video: the engine sends them one at a time, in order. */
  readonly sequentialParts = true;
  private readonly api: JsonApi;

  constructor(
    readonly name: string,
    private readonly config: ValtConfig,
    deps: TargetDeps,
  ) {
    const api = { platform: `Valt (${name})`, baseUrl: config.base_url, requestTimeout: config.request_timeout };
    this.api = new JsonApi(api, deps.http, new Authenticator(config.auth, deps.http, deps.secrets, config.request_timeout), deps.secrets);
  }

  refuse(): string | null {
    return null; // The document states no format or size limit.
  }

  /** Chunks of `chunk_size`; Valt has no minimum, so `upload.part_size` does not apply. */
  layout(file: SourceFile): PartLayout {
    return sliceParts(file.size, this.config.chunk_size);
  }

  async start(file: SourceFile, _layout: PartLayout | null, signal: AbortSignal): Promise<StartResult> {
    const body: CreateUploadBody = { name: mediaTitle(file) };
    if (this.config.template) body.template = this.config.template;
    if (this.config.share) body.share = { users: this.config.share.users ?? [], groups: this.config.share.groups ?? [] };
    const record = await this.api.call({ method: 'POST', path: '/records/create-upload', json: body, schema: RecordResponse, signal });
    const session: ValtSession = { record_id: record.id, video_id: record.videos[0]! };
    return { session };
  }

  async sendPart({ session: raw, file, part, body, signal }: SendPartRequest): Promise<PartReceipt> {
    const session = ValtSession.parse(raw);
    const range = contentRange(part.offset, part.size, file.size);
    const form = new FileForm(file.name, file.contentType);
    const answer = await this.api.send({
      method: 'POST',
      path: `/records/${encodeURIComponent(session.record_id)}/videos/${encodeURIComponent(session.video_id)}`,
      headers: { 'content-type': form.contentType, 'content-length': String(form.length(part.size)), 'content-range': range },
      body: form.body(body()),
      detail: range,
      // The chunk's body is watched for stalls by the engine, like any part.
      timeoutMs: null,
      signal,
    });
    // Any 2xx acknowledges the chunk; the last one's answer may carry the download URL.
    const url = chunkUrl(answer);
    return url ? { etag: null, session: { ...session, url: redactUrl(url) } } : { etag: null };
  }

  /** The last chunk completed the video: nothing to call. */
  async complete(raw: SessionState): Promise<UploadResult> {
    const session = ValtSession.parse(raw);
    return { record_id: session.record_id, video_id: session.video_id, ...(session.url ? { url: session.url } : {}) };
  }

  /** Valt's API has no call to delete a record or cancel an upload: a record given up stays incomplete there. */
  async abort(): Promise<void> {}

  async close(): Promise<void> {}
}
