/**
 * The ALO VMS incidents API (its multipart upload document) as a local HTTP server backed by an
 * S3Store. Where the document is silent it answers as a strict real service would, so that a daemon
 * that passes here has not merely pleased a lenient mock: unknown fields, wrong types and keys that
 * were never uploaded are refused.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type http from 'node:http';
import { z } from 'zod';
import {
  bearerChallenge,
  EmulatorServer,
  HttpProblem,
  jsonBody,
  loggedBody,
  readBody,
  sendJson,
  validate,
  type Reply,
  type RecordsArrivals,
} from './json-server.js';
import type { TlsIdentity } from './listen.js';
import { S3Error, type S3Store } from './s3-store.js';

export interface AloEmulatorOptions {
  store: S3Store;
  host?: string;
  port?: number;
  /** Serve HTTPS with this key and certificate. Default: plain HTTP. */
  tls?: TlsIdentity;
  /** Every API call must carry this header with exactly this value. Default: Authorization: Bearer alo-test-token. */
  auth?: { header: string; value: string };
  urlExpiresSeconds?: number;
  maxUploadSizeMb?: number;
}

export type AloRoute =
  'create_multipart_upload' | 'upload_urls' | 'complete_multipart_upload' | 'abort_multipart_upload' | 'put_incident' | 'get_incident';

export interface AloVideo {
  id: string;
  started_at: string | null;
  ended_at: string | null;
  camera_name: string | null;
  camera_description: string | null;
  camera_longitude: number | null;
  camera_latitude: number | null;
}

export interface AloUploadedVideo extends AloVideo {
  s3_key: string;
  s3_thumbnail_key: string | null;
}

export interface AloFailedVideo extends AloVideo {
  upload_errors: string[];
}

/** The `vms_incident` object of GET /vms/incidents/{id}, field for field as the seed shows it. */
export interface AloIncident {
  id: string;
  title: string | null;
  description: string | null;
  incident_at: string | null;
  created_at: string;
  updated_at: string;
  longitude: number | null;
  latitude: number | null;
  uploaded_videos: AloUploadedVideo[];
  failed_videos: AloFailedVideo[];
}

export interface AloCall {
  method: string;
  route: AloRoute | 'unknown';
  /** Epoch milliseconds when the request arrived. */
  at: number;
  incidentId?: string;
  query: Record<string, string>;
  body?: unknown;
  /** 0 when the connection was destroyed instead of answered. */
  status: number;
}

export interface AloReport {
  incidentId: string;
  body: unknown;
  status: number;
}

export interface AloEmulator extends RecordsArrivals {
  /** TCP connections accepted so far (every request arrives on one): compared with a proxy's tunnels. */
  readonly connections: number;
  /** `${origin}/v1`, what goes in targets.alo.base_url. */
  readonly baseUrl: string;
  incident(id: string): AloIncident | undefined;
  readonly reports: AloReport[];
  readonly calls: AloCall[];
  /** The next `count` calls of the route are answered with `status` and not carried out. */
  failNext(route: AloRoute, count: number, status?: number): void;
  /** Drops the faults still queued for the route. */
  clearFaults(route: AloRoute): void;
  /** The next `count` calls of the route answer `status` (default 500) with an error echoing the request: URL, query and headers. */
  echoNext(route: AloRoute, count: number, status?: number): void;
  /**
   * The next `count` calls of the route get their connection destroyed instead of an answer: 'before' the
   * call is carried out (default), or 'after' it, as when a response is lost on the way back.
   */
  resetNext(route: AloRoute, count: number, when?: 'before' | 'after'): void;
  setUrlExpiry(seconds: number): void;
  /**
   * This file id is refused for good, 422 with this message (a policy a real ALO could have): at
   * upload_urls (default), before any byte is sent, or at complete_multipart_upload, once its parts are in S3.
   */
  refuseFile(fileId: string, message: string, at?: 'upload_urls' | 'complete_multipart_upload'): void;
  /** Takes back refuseFile: the policy was changed on the platform's side. */
  allowFile(fileId: string): void;
  close(): Promise<void>;
}

// The organisation id of the seed's examples, so keys look exactly like production ones.
const ORG_ID = '08697d4a-dd01-457f-a4f7-823f0ab35814';
const MAX_BODY_BYTES = 10 * 1024 * 1024;
const MAX_PART_COUNT = 10_000;

const isoDateTime = z.iso
  .datetime({ offset: true })
  .refine((value) => !Number.isNaN(Date.parse(value)), { message: 'Invalid ISO-8601 date-time' });
const latitude = z.number().min(-90).max(90);
const longitude = z.number().min(-180).max(180);

const videoFields = {
  id: z.string().min(1),
  started_at: isoDateTime.optional(),
  ended_at: isoDateTime.optional(),
  camera_id: z.string().optional(),
  camera_name: z.string().optional(),
  camera_description: z.string().optional(),
  camera_latitude: latitude.optional(),
  camera_longitude: longitude.optional(),
};

const putIncidentSchema = z.strictObject({
  vms_incident: z.strictObject({
    title: z.string().optional(),
    description: z.string().optional(),
    created_at: isoDateTime.optional(),
    updated_at: isoDateTime.optional(),
    incident_at: isoDateTime.optional(),
    latitude: latitude.optional(),
    longitude: longitude.optional(),
    uploaded_videos: z
      .array(
        z.strictObject({
          ...videoFields,
          s3_key: z.string().min(1),
          s3_thumbnail_key: z.string().min(1).optional(),
        }),
      )
      .optional(),
    failed_videos: z
      .array(
        z.strictObject({
          ...videoFields,
          errors: z.array(z.string()).min(1),
        }),
      )
      .optional(),
  }),
});
type PutIncidentBody = z.infer<typeof putIncidentSchema>;
type VideoInput = z.infer<z.ZodObject<typeof videoFields>>;

const multipartFileSchema = z.strictObject({
  part_count: z.int().min(1).max(MAX_PART_COUNT),
  s3_key: z.string().min(1),
  upload_id: z.string().min(1),
});
const singleFileSchema = z.strictObject({ filename: z.string().min(1) });
const uploadUrlsSchema = z.strictObject({
  files: z.record(z.string().min(1), z.unknown()).refine((files) => Object.keys(files).length > 0, {
    message: 'must name at least one file',
  }),
});

const completeSchema = z.strictObject({
  s3_key: z.string().min(1),
  upload_id: z.string().min(1),
  parts: z.array(z.string().min(1)),
});

export async function startAloEmulator(opts: AloEmulatorOptions): Promise<AloEmulator> {
  const emulator = new AloServer(opts);
  await emulator.listen(opts.host ?? '127.0.0.1', opts.port ?? 0, opts.tls);
  return emulator;
}

class AloServer extends EmulatorServer<AloRoute, AloCall> implements AloEmulator {
  readonly reports: AloReport[] = [];
  private readonly store: S3Store;
  private readonly auth: { header: string; value: string };
  private urlExpiresSeconds: number;
  private readonly refusedFiles = new Map<string, string>();
  private readonly refusedCompletions = new Map<string, string>();
  /**
   * The key segment after the organisation. The seed's examples show the same value
   * (1dda6e79-…) in keys of different calls, so it belongs to the account, not to the upload:
   * keys are `vms/<org>/<account>/<incident>/[<file_id>_]<filename>`, the same each time a file is
   * asked for again, and a single PUT sent again after a crash overwrites its own object.
   */
  private readonly accountId = randomUUID();
  private readonly maxUploadSizeMb: number;
  private readonly incidents = new Map<string, AloIncident>();
  /** uploadId → the incident, key and file id it was created for. */
  private readonly multipartUploads = new Map<string, { incidentId: string; s3Key: string; fileId: string }>();
  /** The keys handed out for each incident: a report may name only those (another incident's object is not this one's). */
  private readonly handedOut = new Map<string, Set<string>>();

  constructor(opts: AloEmulatorOptions) {
    super();
    this.store = opts.store;
    this.auth = {
      header: (opts.auth?.header ?? 'authorization').toLowerCase(),
      value: opts.auth?.value ?? 'Bearer alo-test-token',
    };
    this.urlExpiresSeconds = opts.urlExpiresSeconds ?? 7200;
    this.maxUploadSizeMb = opts.maxUploadSizeMb ?? -1;
  }

  get baseUrl(): string {
    return `${this.origin}/v1`;
  }

  incident(id: string): AloIncident | undefined {
    const incident = this.incidents.get(id);
    return incident && structuredClone(incident);
  }

  setUrlExpiry(seconds: number): void {
    this.urlExpiresSeconds = seconds;
  }

  refuseFile(fileId: string, message: string, at: 'upload_urls' | 'complete_multipart_upload' = 'upload_urls'): void {
    (at === 'upload_urls' ? this.refusedFiles : this.refusedCompletions).set(fileId, message);
  }

  allowFile(fileId: string): void {
    this.refusedFiles.delete(fileId);
    this.refusedCompletions.delete(fileId);
  }

  protected async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://alo.invalid');
    const query = Object.fromEntries(url.searchParams);
    const method = req.method ?? '';
    const matched = matchRoute(method, url.pathname);
    const call: AloCall = { method, route: matched.route ?? 'unknown', at: Date.now(), query, status: 0 };
    if (matched.incidentId !== undefined) call.incidentId = matched.incidentId;

    let raw: Buffer;
    try {
      raw = await readBody(req, MAX_BODY_BYTES);
    } catch (err) {
      // A client that went away mid-body is not logged: there is no call to speak of.
      if (err instanceof HttpProblem) this.answer(req, res, call, this.problemReply(err));
      return;
    }
    if (raw.length > 0) call.body = loggedBody(raw);
    if (matched.problem) {
      this.answer(req, res, call, this.problemReply(matched.problem));
      return;
    }
    const route = matched.route as AloRoute;
    const incidentId = matched.incidentId as string;

    const fault = this.takeFault(route);
    const preempted = this.preemption(fault, req);
    if (preempted) {
      this.answer(req, res, call, preempted);
      return;
    }
    const reply = await this.carryOut(() => {
      this.checkAuth(req);
      const body = method === 'POST' || method === 'PUT' ? jsonBody(req, raw) : undefined;
      return this.dispatch(route, incidentId, query, body);
    });
    this.answer(req, res, call, fault?.kind === 'reset' ? 'reset' : reply);
  }

  /** Every answered PUT of an incident is a report, whatever its status. */
  protected override answer(req: http.IncomingMessage, res: http.ServerResponse, call: AloCall, reply: Reply | 'reset'): void {
    super.answer(req, res, call, reply);
    if (call.route === 'put_incident' && call.incidentId !== undefined) {
      this.reports.push({ incidentId: call.incidentId, body: call.body, status: call.status });
    }
  }

  protected problemReply(problem: HttpProblem): Reply {
    return { status: problem.status, body: { error: { code: problem.status, message: problem.message } } };
  }

  protected send(res: http.ServerResponse, reply: Reply): void {
    sendJson(res, reply, {
      'content-type': 'application/json; charset=utf-8',
      'x-request-id': randomBytes(8).toString('hex'),
      ...bearerChallenge(reply.status),
    });
  }

  private checkAuth(req: http.IncomingMessage): void {
    const given = req.headers[this.auth.header];
    if (given !== this.auth.value) {
      throw new HttpProblem(401, given === undefined ? `missing ${this.auth.header} header` : 'invalid credentials');
    }
  }

  private async dispatch(route: AloRoute, incidentId: string, query: Record<string, string>, body: unknown): Promise<Reply> {
    switch (route) {
      case 'create_multipart_upload':
        return this.createMultipartUpload(incidentId, query);
      case 'upload_urls':
        return this.uploadUrls(incidentId, body);
      case 'complete_multipart_upload':
        return this.completeMultipartUpload(incidentId, body);
      case 'abort_multipart_upload':
        return this.abortMultipartUpload(incidentId, query);
      case 'get_incident': {
        const incident = this.incidents.get(incidentId);
        if (!incident) throw new HttpProblem(404, `incident ${incidentId} not found`);
        return { status: 200, body: { vms_incident: incident } };
      }
      case 'put_incident':
        return this.putIncident(incidentId, body);
    }
  }

  private createMultipartUpload(incidentId: string, query: Record<string, string>): Reply {
    const fileId = query['file_id'];
    const filename = query['filename'];
    if (!fileId) throw new HttpProblem(400, 'file_id: required query parameter');
    if (!filename) throw new HttpProblem(400, 'filename: required query parameter');
    const s3Key = `vms/${ORG_ID}/${this.accountId}/${incidentId}/${fileId}_${filename}`;
    const uploadId = this.store.createMultipartUpload(s3Key);
    this.multipartUploads.set(uploadId, { incidentId, s3Key, fileId });
    this.handOut(incidentId, s3Key);
    return { status: 200, body: { s3_key: s3Key, upload_id: uploadId } };
  }

  private async uploadUrls(incidentId: string, body: unknown): Promise<Reply> {
    const { files } = validate(uploadUrlsSchema, body);
    const uploads: Record<string, { s3_key: string; signed_urls: string | string[] }> = {};
    for (const [fileId, file] of Object.entries(files)) {
      const field = `files.${fileId}`;
      const refusal = this.refusedFiles.get(fileId);
      if (refusal) throw new HttpProblem(422, `${field}: ${refusal}`);
      if (typeof file !== 'object' || file === null || Array.isArray(file)) {
        throw new HttpProblem(400, `${field}: expected a file object`);
      }
      const multipartFields = ['part_count', 's3_key', 'upload_id'].filter((k) => k in file);
      const single = 'filename' in file;
      if (single && multipartFields.length > 0) {
        throw new HttpProblem(
          400,
          `${field}: give either filename (single upload) or part_count, s3_key and upload_id (multipart), not both`,
        );
      }
      if (!single && multipartFields.length === 0) {
        throw new HttpProblem(400, `${field}.filename: required (or part_count, s3_key and upload_id for a multipart upload)`);
      }
      if (single) {
        const { filename } = validate(singleFileSchema, file, field);
        const s3Key = `vms/${ORG_ID}/${this.accountId}/${incidentId}/${filename}`;
        const signedUrl = await this.store.presignPutObject(s3Key, this.urlExpiresSeconds);
        this.handOut(incidentId, s3Key);
        uploads[fileId] = { s3_key: s3Key, signed_urls: signedUrl };
        continue;
      }
      const multipart = validate(multipartFileSchema, file, field);
      const owner = this.multipartUploads.get(multipart.upload_id);
      const open = this.store.openMultipartUploads().some((u) => u.uploadId === multipart.upload_id && u.key === multipart.s3_key);
      if (!owner || owner.incidentId !== incidentId || owner.s3Key !== multipart.s3_key || !open) {
        throw new HttpProblem(
          404,
          `${field}.upload_id: no open multipart upload ${multipart.upload_id} for s3_key ${multipart.s3_key} in incident ${incidentId}`,
        );
      }
      const urls: string[] = [];
      for (let partNumber = 1; partNumber <= multipart.part_count; partNumber++) {
        urls.push(await this.store.presignUploadPart(multipart.s3_key, multipart.upload_id, partNumber, this.urlExpiresSeconds));
      }
      uploads[fileId] = { s3_key: multipart.s3_key, signed_urls: urls };
    }
    return {
      status: 200,
      body: { incident_id: incidentId, max_upload_size_mb: this.maxUploadSizeMb, uploads },
    };
  }

  private completeMultipartUpload(incidentId: string, body: unknown): Reply {
    const request = validate(completeSchema, body);
    this.requireOwnUpload(incidentId, request.s3_key, request.upload_id);
    const fileId = this.multipartUploads.get(request.upload_id)?.fileId;
    const refusal = fileId === undefined ? undefined : this.refusedCompletions.get(fileId);
    if (refusal) throw new HttpProblem(422, refusal);
    try {
      this.store.completeMultipartUpload(request.s3_key, request.upload_id, request.parts);
    } catch (err) {
      throw fromS3Error(err);
    }
    this.multipartUploads.delete(request.upload_id);
    return { status: 200, body: { s3_key: request.s3_key, upload_id: request.upload_id } };
  }

  private abortMultipartUpload(incidentId: string, query: Record<string, string>): Reply {
    const s3Key = query['s3_key'];
    const uploadId = query['upload_id'];
    if (!s3Key) throw new HttpProblem(400, 's3_key: required query parameter');
    if (!uploadId) throw new HttpProblem(400, 'upload_id: required query parameter');
    this.requireOwnUpload(incidentId, s3Key, uploadId);
    try {
      this.store.abortMultipartUpload(s3Key, uploadId);
    } catch (err) {
      throw fromS3Error(err);
    }
    this.multipartUploads.delete(uploadId);
    return { status: 200, body: { s3_key: s3Key, upload_id: uploadId } };
  }

  private handOut(incidentId: string, s3Key: string): void {
    let keys = this.handedOut.get(incidentId);
    if (!keys) this.handedOut.set(incidentId, (keys = new Set()));
    keys.add(s3Key);
  }

  /** A key in a report must name an uploaded object that was handed out for this very incident. */
  private requireOwnObject(incidentId: string, s3Key: string, field: string): void {
    if (!this.handedOut.get(incidentId)?.has(s3Key)) {
      throw new HttpProblem(400, `${field}: s3_key "${s3Key}" was never handed out for this incident`);
    }
    if (!this.store.hasObject(s3Key)) throw new HttpProblem(400, `${field}: no uploaded object with key "${s3Key}"`);
  }

  /** An upload created for another incident is as unknown to this one as a made-up id. */
  private requireOwnUpload(incidentId: string, s3Key: string, uploadId: string): void {
    const owner = this.multipartUploads.get(uploadId);
    if (owner && (owner.incidentId !== incidentId || owner.s3Key !== s3Key)) {
      throw new HttpProblem(404, `NoSuchUpload: no multipart upload ${uploadId} for s3_key ${s3Key} in incident ${incidentId}`);
    }
  }

  private putIncident(incidentId: string, body: unknown): Reply {
    const { vms_incident: input } = validate(putIncidentSchema, body);
    const seen = new Set<string>();
    const checkId = (id: string, field: string) => {
      if (seen.has(id)) throw new HttpProblem(400, `${field}: duplicate video id "${id}"`);
      seen.add(id);
    };
    (input.uploaded_videos ?? []).forEach((video, i) => {
      const field = `vms_incident.uploaded_videos[${i}]`;
      checkId(video.id, `${field}.id`);
      this.requireOwnObject(incidentId, video.s3_key, `${field}.s3_key`);
      if (video.s3_thumbnail_key !== undefined) this.requireOwnObject(incidentId, video.s3_thumbnail_key, `${field}.s3_thumbnail_key`);
    });
    (input.failed_videos ?? []).forEach((video, i) => checkId(video.id, `vms_incident.failed_videos[${i}].id`));

    const previous = this.incidents.get(incidentId);
    const now = new Date().toISOString();
    const incident = toStoredIncident(incidentId, input, previous?.created_at ?? now, now);
    this.incidents.set(incidentId, incident);
    return { status: previous ? 200 : 201, body: { vms_incident: incident } };
  }
}

function matchRoute(method: string, pathname: string): { route?: AloRoute; incidentId?: string; problem?: HttpProblem } {
  const notFound = { problem: new HttpProblem(404, `no route for ${method} ${pathname}`) };
  const segments = pathname.split('/');
  // ['', 'v1', 'vms', 'incidents', id, action?]
  if (segments[1] !== 'v1' || segments[2] !== 'vms' || segments[3] !== 'incidents') return notFound;
  if (segments.length < 5 || segments.length > 6 || segments[4] === '') return notFound;
  let incidentId: string;
  try {
    incidentId = decodeURIComponent(segments[4] ?? '');
  } catch {
    return notFound;
  }
  const action = segments[5];
  const allowed: Partial<Record<string, AloRoute>> =
    action === undefined
      ? { GET: 'get_incident', PUT: 'put_incident' }
      : action === 'create_multipart_upload'
        ? { GET: 'create_multipart_upload' }
        : action === 'upload_urls'
          ? { POST: 'upload_urls' }
          : action === 'complete_multipart_upload'
            ? { POST: 'complete_multipart_upload' }
            : action === 'abort_multipart_upload'
              ? { GET: 'abort_multipart_upload' }
              : {};
  if (Object.keys(allowed).length === 0) return { incidentId, ...notFound };
  const route = allowed[method];
  if (!route) {
    return {
      incidentId,
      problem: new HttpProblem(405, `method ${method} not allowed; use ${Object.keys(allowed).join(' or ')}`),
    };
  }
  return { route, incidentId };
}

function fromS3Error(err: unknown): HttpProblem {
  if (!(err instanceof S3Error)) throw err;
  return new HttpProblem(err.status === 404 ? 404 : 400, `${err.code}: ${err.message}`);
}

/** ALO echoes dates back in Rails' millisecond form (the seed's 11:04:41.03Z comes back as 11:04:41.030Z). */
function normalizeDate(value: string | undefined): string | null {
  return value === undefined ? null : new Date(value).toISOString();
}

function toStoredIncident(id: string, input: PutIncidentBody['vms_incident'], firstCreatedAt: string, now: string): AloIncident {
  const video = (v: VideoInput): AloVideo => ({
    id: v.id,
    started_at: normalizeDate(v.started_at),
    ended_at: normalizeDate(v.ended_at),
    camera_name: v.camera_name ?? null,
    camera_description: v.camera_description ?? null,
    camera_longitude: v.camera_longitude ?? null,
    camera_latitude: v.camera_latitude ?? null,
  });
  return {
    id,
    title: input.title ?? null,
    description: input.description ?? null,
    incident_at: normalizeDate(input.incident_at),
    created_at: normalizeDate(input.created_at) ?? firstCreatedAt,
    updated_at: normalizeDate(input.updated_at) ?? now,
    longitude: input.longitude ?? null,
    latitude: input.latitude ?? null,
    uploaded_videos: (input.uploaded_videos ?? []).map((v) => ({
      ...video(v),
      s3_key: v.s3_key,
      s3_thumbnail_key: v.s3_thumbnail_key ?? null,
    })),
    failed_videos: (input.failed_videos ?? []).map((v) => ({ ...video(v), upload_errors: [...v.errors] })),
  };
}
