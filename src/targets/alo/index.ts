/**
 * ALO (the VMS incidents API document): each video and its thumbnail go to S3 through presigned
 * URLs, as one PUT below `multipart_threshold` and as an S3 multipart upload above it; the
 * incident is then PUT with its uploaded and failed videos.
 */
import type { HttpClient } from '../../upload/http.js';
import { planParts, singlePart, S3_LIMITS, type PartLayout } from '../../plan/part-plan.js';
import { Authenticator } from '../auth.js';
import { JsonApi } from '../json-api.js';
import { putPresigned } from '../presigned-put.js';
import { UrlCache, type FetchedUrl } from '../url-cache.js';
import {
  TargetError,
  type CompletedPart,
  type FileRole,
  type IncidentReport,
  type PartReceipt,
  type SendPartRequest,
  type SessionState,
  type SourceFile,
  type StartResult,
  type Target,
  type TargetDeps,
  type UploadResult,
} from '../target.js';
import {
  AloSession,
  AnyResponse,
  CompleteResponse,
  CreateMultipartResponse,
  UploadUrlsResponse,
  type AloIncidentBody,
  type AloVideo,
} from './api.js';
import type { AloConfig } from './config.js';

export class AloTarget implements Target {
  readonly roles: readonly FileRole[] = ['video', 'thumbnail'];
  private readonly api: JsonApi;
  private readonly http: HttpClient;
  /** Presigned URLs by file (`incident/file_id`), kept in memory only: never reused after a restart. */
  private readonly urls = new UrlCache();
  /** The key a single PUT's URL was minted for, by file: the upload's result. */
  private readonly singleKeys = new Map<string, string>();

  constructor(
    readonly name: string,
    private readonly config: AloConfig,
    deps: TargetDeps,
  ) {
    this.http = deps.http;
    const api = { platform: `ALO (${name})`, baseUrl: config.base_url, requestTimeout: config.request_timeout };
    this.api = new JsonApi(api, deps.http, new Authenticator(config.auth, deps.http, deps.secrets, config.request_timeout), deps.secrets);
  }

  refuse(): string | null {
    return null; // ALO states its size limit in the upload_urls answer; checked there.
  }

  layout(file: SourceFile, preferredPartSize: number): PartLayout {
    return file.size >= this.config.multipart_threshold ? planParts(file.size, preferredPartSize, S3_LIMITS) : singlePart(file.size);
  }

  async start(file: SourceFile, layout: PartLayout, signal: AbortSignal): Promise<StartResult> {
    const fileId = fileIdOf(file);
    if (layout.length === 1 && file.size < this.config.multipart_threshold) {
      // Nothing is opened at ALO for a single PUT: its URL is asked for when the part is sent.
      return { session: { mode: 'single', file_id: fileId } satisfies AloSession, remote: false };
    }
    const created = await this.api.call({
      method: 'GET',
      path: `${incidentPath(file)}/create_multipart_upload`,
      query: { file_id: fileId, filename: file.name },
      schema: CreateMultipartResponse,
      signal,
    });
    const session: AloSession = {
      mode: 'multipart',
      file_id: fileId,
      s3_key: created.s3_key,
      upload_id: created.upload_id,
      part_count: layout.length,
    };
    try {
      // Asking for the URLs now also learns ALO's size limit before a single byte is sent.
      await this.urlFor(session, file, 1, signal);
    } catch (err) {
      if (err instanceof TargetError && err.kind === 'permanent') {
        await this.abort(session, file, signal).catch(() => undefined);
        throw err;
      }
      // ALO busy or unreachable for a moment: the multipart upload exists, so it is kept (thrown
      // away, it would stay open in S3 and the next try would open another). Its URLs, and the
      // size limit with them, are asked for again when its first part goes out.
      if (!(err instanceof TargetError) || signal.aborted) throw err;
      return { session, deferredError: err };
    }
    return { session };
  }

  async sendPart({ session: raw, file, part, body, signal }: SendPartRequest): Promise<PartReceipt> {
    const session = AloSession.parse(raw);
    const url = await this.urlFor(session, file, part.number, signal);
    try {
      const etag = await putPresigned(this.http, url, body(), part.size, signal);
      if (session.mode === 'multipart') return { etag };
      return { etag, session: { ...session, s3_key: this.singleKeys.get(urlKey(session, file)) } };
    } catch (err) {
      if (err instanceof TargetError && err.kind === 'new-url') this.urls.drop(urlKey(session, file), part.number);
      throw err;
    }
  }

  async complete(raw: SessionState, file: SourceFile, parts: CompletedPart[], signal: AbortSignal): Promise<UploadResult> {
    const session = AloSession.parse(raw);
    this.forget(session, file);
    if (session.mode === 'single') {
      if (!session.s3_key) throw new TargetError('permanent', 'single upload finished without an s3_key');
      return { s3_key: session.s3_key };
    }
    try {
      await this.api.call({
        method: 'POST',
        path: `${incidentPath(file)}/complete_multipart_upload`,
        json: { s3_key: session.s3_key, upload_id: session.upload_id, parts: parts.map((p) => p.etag) },
        schema: CompleteResponse,
        signal,
      });
    } catch (err) {
      // S3's NoSuchUpload: a complete we sent before a restart already went through (the README's
      // "Assumed" list for ALO: the document is silent on a repeated complete).
      if (!(err instanceof TargetError && err.details.status === 404)) throw err;
    }
    return { s3_key: session.s3_key };
  }

  async abort(raw: SessionState, file: SourceFile, signal: AbortSignal): Promise<void> {
    const session = AloSession.parse(raw);
    this.forget(session, file);
    if (session.mode === 'single') return;
    try {
      await this.api.call({
        method: 'GET',
        path: `${incidentPath(file)}/abort_multipart_upload`,
        query: { s3_key: session.s3_key, upload_id: session.upload_id },
        schema: AnyResponse,
        signal,
      });
    } catch (err) {
      if (!(err instanceof TargetError && err.details.status === 404)) throw err;
    }
  }

  async report(report: IncidentReport, signal: AbortSignal): Promise<void> {
    const { incident } = report;
    const body: AloIncidentBody = {
      vms_incident: {
        ...pick(incident, ['title', 'description', 'created_at', 'updated_at', 'incident_at', 'latitude', 'longitude']),
        uploaded_videos: [],
        failed_videos: [],
      },
    };
    for (const entry of report.videos) {
      const video: AloVideo = pick(entry.video, [
        'id',
        'started_at',
        'ended_at',
        'camera_id',
        'camera_name',
        'camera_description',
        'camera_latitude',
        'camera_longitude',
      ]);
      if (entry.outcome === 'uploaded') {
        video.s3_key = entry.results.video?.s3_key;
        if (entry.results.thumbnail?.s3_key) video.s3_thumbnail_key = entry.results.thumbnail.s3_key;
        body.vms_incident.uploaded_videos.push(video);
      } else {
        video.errors = entry.errors;
        body.vms_incident.failed_videos.push(video);
      }
    }
    await this.api.call({
      method: 'PUT',
      path: `/vms/incidents/${encodeURIComponent(incident.id)}`,
      json: body,
      schema: AnyResponse,
      signal,
    });
  }

  async close(): Promise<void> {
    this.urls.clear();
    this.singleKeys.clear();
  }

  private forget(session: AloSession, file: SourceFile): void {
    this.urls.forget(urlKey(session, file));
    this.singleKeys.delete(urlKey(session, file));
  }

  /** A part's URL; ALO hands out the URLs of every part at once, and again when they near expiry. */
  private urlFor(session: AloSession, file: SourceFile, part: number, signal: AbortSignal): Promise<string> {
    return this.urls.get(urlKey(session, file), part, () => this.fetchUrls(session, file, signal));
  }

  private async fetchUrls(session: AloSession, file: SourceFile, signal: AbortSignal): Promise<FetchedUrl[]> {
    const request =
      session.mode === 'single'
        ? { filename: file.name }
        : { part_count: session.part_count, s3_key: session.s3_key, upload_id: session.upload_id };
    const res = await this.api.call({
      method: 'POST',
      path: `${incidentPath(file)}/upload_urls`,
      json: { files: { [session.file_id]: request } },
      schema: UploadUrlsResponse,
      signal,
    });
    const max = res.max_upload_size_mb;
    if (max !== undefined && max >= 0 && file.size > max * 1024 * 1024) {
      throw new TargetError(
        'permanent',
        `${file.name} is ${(file.size / 1048576).toFixed(1)} MB; ALO accepts at most ${max} MB (max_upload_size_mb)`,
      );
    }
    const entry = res.uploads[session.file_id];
    if (!entry) throw new TargetError('retryable', `ALO upload_urls answered without an entry for ${session.file_id}`);
    const urls = typeof entry.signed_urls === 'string' ? [entry.signed_urls] : entry.signed_urls;
    const expected = session.mode === 'multipart' ? session.part_count : 1;
    if (urls.length !== expected) throw new TargetError('permanent', `ALO gave ${urls.length} URLs for ${expected} parts`);
    if (session.mode === 'single') this.singleKeys.set(urlKey(session, file), entry.s3_key);
    return urls.map((url, i) => ({ part: i + 1, url }));
  }
}

/** Only the fields ALO's API defines: it refuses anything else. */
function pick<T extends object, K extends keyof T>(from: T, keys: readonly K[]): Pick<T, K> {
  const out = {} as Pick<T, K>;
  for (const k of keys) if (from[k] !== undefined) out[k] = from[k];
  return out;
}

function fileIdOf(file: SourceFile): string {
  return file.role === 'thumbnail' ? `${file.video.id}_thumbnail` : file.video.id;
}

function incidentPath(file: SourceFile): string {
  return `/vms/incidents/${encodeURIComponent(file.incident.id)}`;
}

function urlKey(session: AloSession, file: SourceFile): string {
  return session.mode === 'multipart' ? `m:${session.upload_id}` : `s:${file.incident.id}/${session.file_id}`;
}
