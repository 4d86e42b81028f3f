/**
 * Valt (seeds/001, CONTRACT §5 and §7): each video becomes one record, created with
 * `POST /records/create-upload`, whose video receives the file in chunks of `chunk_size`:
 * one multipart/form-data POST per chunk with an RFC 9110 `Content-Range`, strictly in order,
 * because Valt appends what it receives. The last chunk completes the video; there is nothing
 * to call afterwards and nothing to abort (the API has no such call).
 *
 * The login token travels as the `access_token` query parameter (Authenticator); only the path
 * ever goes into a message, and the HTTP client masks the query of any URL it reports.
 */
import type { ValtTargetConfig } from '../../config/schema.js';
import { redactUrl } from '../../log/redact.js';
import { sliceParts, type PartLayout } from '../../plan/part-plan.js';
import { retryAfterMs, statusKind, type HttpClient } from '../../upload/http.js';
import { Authenticator } from '../auth.js';
import { JsonApi, platformMessage } from '../json-api.js';
import {
  TargetError,
  type FileRole,
  type PartReceipt,
  type SendPartRequest,
  type SessionState,
  type SourceFile,
  type StartResult,
  type Target,
  type UploadResult,
} from '../target.js';
import { chunkUrl, contentRange, FileForm, RecordResponse, ValtSession, type CreateUploadBody } from './api.js';

export class ValtTarget implements Target {
  readonly roles: readonly FileRole[] = ['video'];
  /** Valt appends each chunk to the video: the engine sends them one at a time, in order. */
  readonly sequentialParts = true;
  private readonly auth: Authenticator;
  private readonly api: JsonApi;
  private readonly platform: string;

  constructor(
    readonly name: string,
    private readonly config: ValtTargetConfig,
    private readonly http: HttpClient,
  ) {
    this.platform = `Valt (${name})`;
    this.auth = new Authenticator(config.auth, http);
    this.api = new JsonApi(this.platform, config.baseUrl, http, this.auth);
  }

  refuse(): string | null {
    return null; // The seed states no format or size limit.
  }

  /** Chunks of `chunk_size`; Valt has no minimum, so `upload.part_size` does not apply. */
  layout(file: SourceFile): PartLayout {
    return sliceParts(file.size, this.config.chunkSize);
  }

  async start(file: SourceFile, _layout: PartLayout | null, signal: AbortSignal): Promise<StartResult> {
    const body: CreateUploadBody = { name: recordName(file) };
    if (this.config.template) body.template = this.config.template;
    if (this.config.share) body.share = this.config.share;
    const record = await this.api.call({ method: 'POST', path: '/records/create-upload', json: body, schema: RecordResponse, signal });
    const session: ValtSession = { record_id: record.id, video_id: record.videos[0]! };
    return { session };
  }

  async sendPart({ session: raw, file, part, body, signal }: SendPartRequest): Promise<PartReceipt> {
    const session = ValtSession.parse(raw);
    const path = `/records/${encodeURIComponent(session.record_id)}/videos/${encodeURIComponent(session.video_id)}`;
    const range = contentRange(part.offset, part.size, file.size);
    const form = new FileForm(file.name, file.contentType);
    const headers = {
      accept: 'application/json',
      'content-type': form.contentType,
      'content-length': String(form.length(part.size)),
      'content-range': range,
    };
    const authorized = await this.auth.authorize(`${this.config.baseUrl}${path}`, headers, signal);
    const res = await this.http.request({ method: 'POST', url: authorized.url, headers: authorized.headers, body: form.body(body()), signal });
    if (res.status < 200 || res.status >= 300) {
      let kind = statusKind(res.status);
      if (kind === 'reauth' && !this.auth.invalidate()) kind = 'permanent';
      throw new TargetError(kind, `${this.platform} POST ${path} (${range}) answered ${res.status}: ${platformMessage(res.text)}`, {
        status: res.status,
        retryAfterMs: retryAfterMs(res.headers),
      });
    }
    // Any 2xx acknowledges the chunk; the last one's answer may carry the download URL.
    const url = chunkUrl(res.text);
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

/**
 * `<incident title> — <camera_name>` (CONTRACT §5). Without a title the incident id stands in;
 * without a camera name the file name, so videos of one incident stay apart.
 */
export function recordName(file: SourceFile): string {
  const title = file.incident.title?.trim() || file.incident.id;
  const camera = file.video.camera_name?.trim() || file.name;
  return `${title} — ${camera}`;
}
