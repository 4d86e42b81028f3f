import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAloEmulator, type AloEmulator } from '../emulators/alo.js';
import { S3Error, startS3Store, type S3Store } from '../emulators/s3-store.js';

const MiB = 1024 * 1024;
const AUTH = { authorization: 'Bearer alo-test-token' };
const INCIDENT = '8d1635ed-f747-427c-9b35-d83a08d08ab5';

let store: S3Store;
let alo: AloEmulator;

beforeAll(async () => {
  store = await startS3Store();
  alo = await startAloEmulator({ store });
});

afterAll(async () => {
  await alo?.close();
  await store?.close();
});

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function md5(data: Buffer): string {
  return createHash('md5').update(data).digest('hex');
}

/** Flips the last hex digit of the signature, keeping the URL well-formed. */
function tamperSignature(url: string): string {
  return url.replace(/(X-Amz-Signature=[0-9a-f]{63})([0-9a-f])/, (_m, head: string, last: string) =>
    head + (last === '0' ? '1' : '0'),
  );
}

function xmlCode(text: string): string | undefined {
  return /<Code>([^<]*)<\/Code>/.exec(text)?.[1];
}

async function s3Put(
  url: string,
  body: Buffer | Readable,
  headers: Record<string, string> = {},
): Promise<{ status: number; etag: string | undefined; text: string }> {
  const res = await request(url, { method: 'PUT', body, headers });
  const text = await res.body.text();
  const etag = res.headers['etag'];
  return { status: res.statusCode, etag: typeof etag === 'string' ? etag : undefined, text };
}

interface AloResponse {
  status: number;
  // Loose on purpose: the assertions themselves check the shape.
  json: any;
}

async function aloCall(
  method: 'GET' | 'POST' | 'PUT' | 'DELETE',
  path: string,
  opts: { query?: Record<string, string>; body?: unknown; headers?: Record<string, string> } = {},
): Promise<AloResponse> {
  const url = new URL(`${alo.baseUrl}${path}`);
  for (const [k, v] of Object.entries(opts.query ?? {})) url.searchParams.set(k, v);
  const headers: Record<string, string> = { ...AUTH, ...opts.headers };
  let body: string | undefined;
  if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers['content-type'] ??= 'application/json';
  }
  const res = await request(url, { method, headers, body });
  const text = await res.body.text();
  return { status: res.statusCode, json: text ? JSON.parse(text) : undefined };
}

/** Runs ALO's multipart flow up to (not including) complete; returns what complete needs. */
async function uploadMultipart(
  incidentId: string,
  fileId: string,
  parts: Buffer[],
): Promise<{ s3Key: string; uploadId: string; etags: string[] }> {
  const created = await aloCall('GET', `/vms/incidents/${incidentId}/create_multipart_upload`, {
    query: { file_id: fileId, filename: 'clip 01.mov' },
  });
  expect(created.status).toBe(200);
  const { s3_key: s3Key, upload_id: uploadId } = created.json as { s3_key: string; upload_id: string };
  const urls = await aloCall('POST', `/vms/incidents/${incidentId}/upload_urls`, {
    body: { files: { [fileId]: { part_count: parts.length, s3_key: s3Key, upload_id: uploadId } } },
  });
  expect(urls.status).toBe(200);
  const signed = urls.json.uploads[fileId].signed_urls as string[];
  expect(signed).toHaveLength(parts.length);
  const etags: string[] = [];
  for (const [i, part] of parts.entries()) {
    const put = await s3Put(signed[i]!, part);
    expect(put.status).toBe(200);
    expect(put.etag).toBe(`"${md5(part)}"`);
    etags.push(put.etag!);
  }
  return { s3Key, uploadId, etags };
}

describe('S3 store: presigned single PUT', () => {
  it('stores the bytes of a presigned PUT and answers the quoted MD5 as ETag', async () => {
    const key = 'vms/test/a b/ümlaut (1)+x*.mov';
    const data = randomBytes(300 * 1024);
    const url = await store.presignPutObject(key, 60);
    const query = new URL(url).searchParams;
    expect(query.get('X-Amz-SignedHeaders')).toBe('host');
    expect([...query.keys()].filter((k) => /checksum/i.test(k))).toEqual([]);

    const put = await s3Put(url, data);
    expect(put.status).toBe(200);
    expect(put.etag).toBe(`"${md5(data)}"`);
    expect(store.hasObject(key)).toBe(true);
    expect(store.objectSize(key)).toBe(data.length);
    expect(await store.objectSha256(key)).toBe(sha256(data));
    expect(store.requests.at(-1)).toMatchObject({ method: 'PUT', key, status: 200, bytesReceived: data.length });

    const replacement = randomBytes(1000);
    expect((await s3Put(url, replacement)).status).toBe(200);
    expect(await store.objectSha256(key)).toBe(sha256(replacement));
  });

  it('accepts a Content-Type the URL does not sign, as S3 does', async () => {
    const url = await store.presignPutObject('vms/test/typed.jpg', 60);
    expect((await s3Put(url, randomBytes(10), { 'content-type': 'image/jpeg' })).status).toBe(200);
  });

  it('refuses a tampered signature with 403 SignatureDoesNotMatch', async () => {
    const key = 'vms/test/tampered.mov';
    const url = await store.presignPutObject(key, 60);
    const tampered = tamperSignature(url);
    expect(tampered).not.toBe(url);
    const put = await s3Put(tampered, randomBytes(100));
    expect(put.status).toBe(403);
    expect(xmlCode(put.text)).toBe('SignatureDoesNotMatch');
    expect(store.hasObject(key)).toBe(false);
  });

  it('refuses a URL whose path was re-encoded after signing', async () => {
    const url = await store.presignPutObject('vms/test/cam (2).mov', 60);
    expect(url).toContain('%28');
    const reencoded = url.replace('%282%29', '(2)');
    const put = await s3Put(reencoded, randomBytes(100));
    expect(put.status).toBe(403);
    expect(xmlCode(put.text)).toBe('SignatureDoesNotMatch');
  });

  it('refuses requests without query authentication, and methods other than PUT', async () => {
    const anonymous = await s3Put(`${store.origin}/${store.bucket}/vms/test/anon.mov`, randomBytes(10));
    expect(anonymous.status).toBe(403);
    expect(xmlCode(anonymous.text)).toBe('AccessDenied');

    const url = await store.presignPutObject('vms/test/get.mov', 60);
    const get = await request(url, { method: 'GET' });
    expect(get.statusCode).toBe(405);
    expect(xmlCode(await get.body.text())).toBe('MethodNotAllowed');
  });

  it('refuses an expired URL with 403 AccessDenied', async () => {
    const key = 'vms/test/expired.mov';
    const url = await store.presignPutObject(key, 1);
    // X-Amz-Date has one-second resolution, so only after two seconds is the URL surely past its expiry.
    await sleep(2100);
    const put = await s3Put(url, randomBytes(100));
    expect(put.status).toBe(403);
    expect(xmlCode(put.text)).toBe('AccessDenied');
    expect(put.text).toContain('Request has expired');
    expect(store.hasObject(key)).toBe(false);
  });

  it('refuses unsigned Content-MD5 and x-amz-* headers with 403', async () => {
    const data = randomBytes(100);
    const url = await store.presignPutObject('vms/test/unsigned.mov', 60);
    const unsignedHeaders: Array<Record<string, string>> = [
      { 'content-md5': createHash('md5').update(data).digest('base64') },
      { 'x-amz-meta-camera': 'cam-1' },
    ];
    for (const headers of unsignedHeaders) {
      const put = await s3Put(url, data, headers);
      expect(put.status).toBe(403);
      expect(xmlCode(put.text)).toBe('AccessDenied');
      expect(put.text).toContain('There were headers present in the request which were not signed');
    }
    expect(store.hasObject('vms/test/unsigned.mov')).toBe(false);
  });

  it('refuses a chunked body (no Content-Length) with 501 NotImplemented', async () => {
    const url = await store.presignPutObject('vms/test/chunked.mov', 60);
    const put = await s3Put(url, Readable.from([randomBytes(1000), randomBytes(1000)]));
    expect(put.status).toBe(501);
    expect(xmlCode(put.text)).toBe('NotImplemented');
    expect(store.hasObject('vms/test/chunked.mov')).toBe(false);
  });

  it('decides before 100-continue, so a refused request never sends its body', async () => {
    const data = randomBytes(5000);
    const send = (url: string) =>
      new Promise<{ status: number; continued: boolean; text: string }>((resolve, reject) => {
        let continued = false;
        const req = http.request(url, {
          method: 'PUT',
          headers: { expect: '100-continue', 'content-length': String(data.length) },
        });
        req.on('continue', () => {
          continued = true;
          req.end(data);
        });
        req.on('response', (res) => {
          let text = '';
          res.on('data', (chunk: Buffer) => (text += chunk.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, continued, text }));
        });
        req.on('error', reject);
        req.flushHeaders();
      });
    const key = 'vms/test/continue.mov';
    const url = await store.presignPutObject(key, 60);
    const refused = await send(tamperSignature(url));
    expect(refused).toMatchObject({ status: 403, continued: false });
    expect(xmlCode(refused.text)).toBe('SignatureDoesNotMatch');
    expect(await send(url)).toMatchObject({ status: 200, continued: true });
    expect(await store.objectSha256(key)).toBe(sha256(data));
  });

  it('records a body cut short of its Content-Length as IncompleteBody and stores nothing', async () => {
    const key = 'vms/test/short.mov';
    const url = new URL(await store.presignPutObject(key, 60));
    const socket = net.connect(Number(url.port), url.hostname);
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(`PUT ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Length: 1000\r\n\r\n`);
    socket.end(randomBytes(400));
    let answer = '';
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
    await new Promise((resolve) => socket.once('close', resolve));
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(xmlCode(answer)).toBe('IncompleteBody');
    await expect.poll(() => store.requests.find((r) => r.key === key)).toMatchObject({ code: 'IncompleteBody' });
    expect(store.hasObject(key)).toBe(false);
  });
});

describe('multipart upload through ALO and the store', () => {
  it('assembles 5 MiB parts and a small last part into the object', async () => {
    const parts = [randomBytes(5 * MiB), randomBytes(5 * MiB), randomBytes(123_457)];
    const { s3Key, uploadId, etags } = await uploadMultipart(INCIDENT, 'mp-ok', parts);
    expect(s3Key).toMatch(
      new RegExp(`^vms/08697d4a-dd01-457f-a4f7-823f0ab35814/[0-9a-f-]{36}/${INCIDENT}/mp-ok_clip 01\\.mov$`),
    );
    expect(store.openMultipartUploads().find((u) => u.uploadId === uploadId)?.parts).toEqual([1, 2, 3]);

    // ALO documents bare etags in its example; the quoted form S3 returns must work as well.
    const done = await aloCall('POST', `/vms/incidents/${INCIDENT}/complete_multipart_upload`, {
      body: { s3_key: s3Key, upload_id: uploadId, parts: [etags[0]!.replace(/"/g, ''), etags[1], etags[2]] },
    });
    expect(done.status).toBe(200);
    expect(done.json).toEqual({ s3_key: s3Key, upload_id: uploadId });
    const whole = Buffer.concat(parts);
    expect(store.objectSize(s3Key)).toBe(whole.length);
    expect(await store.objectSha256(s3Key)).toBe(sha256(whole));
    expect(store.openMultipartUploads().some((u) => u.uploadId === uploadId)).toBe(false);

    const again = await aloCall('POST', `/vms/incidents/${INCIDENT}/complete_multipart_upload`, {
      body: { s3_key: s3Key, upload_id: uploadId, parts: etags },
    });
    expect(again.status).toBe(404);
    expect(again.json.error.message).toContain('NoSuchUpload');
  });

  it('refuses to complete with no parts or with an unknown upload id', () => {
    const key = 'vms/test/direct-multipart.mov';
    const uploadId = store.createMultipartUpload(key);
    expect(() => store.completeMultipartUpload(key, uploadId, [])).toThrow(S3Error);
    expect(() => store.completeMultipartUpload(key, 'no-such-upload', ['x'])).toThrow(
      expect.objectContaining({ status: 404, code: 'NoSuchUpload' }),
    );
    store.abortMultipartUpload(key, uploadId);
  });

  it('refuses to complete when a part other than the last is under 5 MiB', async () => {
    const parts = [randomBytes(1024), randomBytes(1024)];
    const { s3Key, uploadId, etags } = await uploadMultipart(INCIDENT, 'mp-small', parts);
    const done = await aloCall('POST', `/vms/incidents/${INCIDENT}/complete_multipart_upload`, {
      body: { s3_key: s3Key, upload_id: uploadId, parts: etags },
    });
    expect(done.status).toBe(400);
    expect(done.json.error.message).toContain('EntityTooSmall');
    expect(store.hasObject(s3Key)).toBe(false);

    // Listing only the first part makes it the last one, which may be small; the unlisted part is dropped.
    const single = await aloCall('POST', `/vms/incidents/${INCIDENT}/complete_multipart_upload`, {
      body: { s3_key: s3Key, upload_id: uploadId, parts: etags.slice(0, 1) },
    });
    expect(single.status).toBe(200);
    expect(store.objectSize(s3Key)).toBe(1024);
  });

  it('refuses to complete with an etag that does not match the part', async () => {
    const { s3Key, uploadId, etags } = await uploadMultipart(INCIDENT, 'mp-etag', [randomBytes(1024)]);
    const done = await aloCall('POST', `/vms/incidents/${INCIDENT}/complete_multipart_upload`, {
      body: { s3_key: s3Key, upload_id: uploadId, parts: [md5(Buffer.from('something else'))] },
    });
    expect(done.status).toBe(400);
    expect(done.json.error.message).toContain('InvalidPart');
    const missing = await aloCall('POST', `/vms/incidents/${INCIDENT}/complete_multipart_upload`, {
      body: { s3_key: s3Key, upload_id: uploadId, parts: [etags[0], etags[0]] },
    });
    expect(missing.status).toBe(400);
    expect(missing.json.error.message).toContain('InvalidPart');
  });

  it('replaces a part uploaded twice with the later body', async () => {
    const first = randomBytes(1000);
    const { s3Key, uploadId } = await uploadMultipart(INCIDENT, 'mp-replace', [first]);
    const second = randomBytes(2000);
    const url = await store.presignUploadPart(s3Key, uploadId, 1, 60);
    const put = await s3Put(url, second);
    // A multipart ETag is the MD5 of the parts' binary MD5s, suffixed with the part count.
    const expectedEtag = `"${md5(Buffer.from(md5(second), 'hex'))}-1"`;
    expect(store.completeMultipartUpload(s3Key, uploadId, [put.etag!])).toEqual({ etag: expectedEtag });
    expect(await store.objectSha256(s3Key)).toBe(sha256(second));
  });

  it('abort removes the open upload; its part URLs then answer 404 NoSuchUpload', async () => {
    const { s3Key, uploadId } = await uploadMultipart(INCIDENT, 'mp-abort', [randomBytes(1024)]);
    expect(store.openMultipartUploads().some((u) => u.uploadId === uploadId)).toBe(true);
    const aborted = await aloCall('GET', `/vms/incidents/${INCIDENT}/abort_multipart_upload`, {
      query: { s3_key: s3Key, upload_id: uploadId },
    });
    expect(aborted.status).toBe(200);
    expect(aborted.json).toEqual({ s3_key: s3Key, upload_id: uploadId });
    expect(store.openMultipartUploads().some((u) => u.uploadId === uploadId)).toBe(false);

    const put = await s3Put(await store.presignUploadPart(s3Key, uploadId, 2, 60), randomBytes(10));
    expect(put.status).toBe(404);
    expect(xmlCode(put.text)).toBe('NoSuchUpload');
    const again = await aloCall('GET', `/vms/incidents/${INCIDENT}/abort_multipart_upload`, {
      query: { s3_key: s3Key, upload_id: uploadId },
    });
    expect(again.status).toBe(404);
  });

  it('gives new URLs for an open upload and honours the configured expiry', async () => {
    const { s3Key, uploadId } = await uploadMultipart(INCIDENT, 'mp-expiry', [randomBytes(10)]);
    alo.setUrlExpiry(900);
    try {
      const urls = await aloCall('POST', `/vms/incidents/${INCIDENT}/upload_urls`, {
        body: { files: { f: { part_count: 2, s3_key: s3Key, upload_id: uploadId } } },
      });
      expect(urls.status).toBe(200);
      const [p1, p2] = urls.json.uploads.f.signed_urls as string[];
      expect(new URL(p2!).searchParams.get('partNumber')).toBe('2');
      expect(new URL(p1!).searchParams.get('X-Amz-Expires')).toBe('900');
    } finally {
      alo.setUrlExpiry(7200);
    }
  });
});

describe('S3 store: injected faults', () => {
  it('answers an injected 503 SlowDown after reading the body, then succeeds', async () => {
    const key = 'vms/test/slowdown.mov';
    const data = randomBytes(64 * 1024);
    const url = await store.presignPutObject(key, 60);
    store.injectFaults({ kind: 'status', status: 503, code: 'SlowDown' });
    const first = await s3Put(url, data);
    expect(first.status).toBe(503);
    expect(xmlCode(first.text)).toBe('SlowDown');
    expect(store.hasObject(key)).toBe(false);
    expect(store.requests.at(-1)).toMatchObject({ key, status: 503, code: 'SlowDown', bytesReceived: data.length });

    const second = await s3Put(url, data);
    expect(second.status).toBe(200);
    expect(await store.objectSha256(key)).toBe(sha256(data));
  });

  it('resets the connection mid-body, keeps nothing, then works again', async () => {
    const key = 'vms/test/reset.mov';
    const data = randomBytes(1 * MiB);
    const url = await store.presignPutObject(key, 60);
    store.injectFaults({ kind: 'reset-midbody', afterBytes: 100_000 });
    await expect(s3Put(url, data)).rejects.toThrow();
    expect(store.hasObject(key)).toBe(false);
    expect(store.requests.at(-1)).toMatchObject({ key, status: 0, code: 'InjectedReset', bytesReceived: 100_000 });

    store.injectFaults({ kind: 'reset-before' });
    await expect(s3Put(url, data)).rejects.toThrow();
    expect(store.requests.at(-1)).toMatchObject({ key, status: 0, bytesReceived: 0 });

    expect((await s3Put(url, data)).status).toBe(200);
    expect(await store.objectSha256(key)).toBe(sha256(data));
  });

  it('applies a fault only to the part it names', async () => {
    const { s3Key, uploadId } = await uploadMultipart(INCIDENT, 'mp-fault', [randomBytes(10)]);
    store.injectFaults({ kind: 'status', status: 500, code: 'InternalError', partNumber: 2 });
    const part1 = await s3Put(await store.presignUploadPart(s3Key, uploadId, 1, 60), randomBytes(10));
    expect(part1.status).toBe(200);
    const part2 = await s3Put(await store.presignUploadPart(s3Key, uploadId, 2, 60), randomBytes(10));
    expect(part2.status).toBe(500);
    expect(xmlCode(part2.text)).toBe('InternalError');
    store.abortMultipartUpload(s3Key, uploadId);
  });
});

describe('ALO API', () => {
  it('requires the auth header on every call', async () => {
    const missing = await aloCall('GET', `/vms/incidents/${INCIDENT}/create_multipart_upload`, {
      query: { file_id: 'a', filename: 'b.mov' },
      headers: { authorization: '' },
    });
    expect(missing.status).toBe(401);
    expect(missing.json.error.code).toBe(401);
    const wrong = await aloCall('PUT', `/vms/incidents/${INCIDENT}`, {
      body: { vms_incident: {} },
      headers: { authorization: 'Bearer nope' },
    });
    expect(wrong.status).toBe(401);
    expect(alo.reports.at(-1)).toMatchObject({ incidentId: INCIDENT, status: 401 });
  });

  it('answers 404 for unknown routes and 405 for wrong methods', async () => {
    expect((await aloCall('GET', '/vms/incidents')).status).toBe(404);
    expect((await aloCall('GET', `/vms/incidents/${INCIDENT}/nope`)).status).toBe(404);
    expect((await aloCall('GET', `/vms/incidents/${INCIDENT}/upload_urls`)).status).toBe(405);
    expect((await aloCall('DELETE', `/vms/incidents/${INCIDENT}`)).status).toBe(405);
  });

  it('requires file_id and filename to create a multipart upload', async () => {
    const res = await aloCall('GET', `/vms/incidents/${INCIDENT}/create_multipart_upload`, { query: { file_id: 'a' } });
    expect(res.status).toBe(400);
    expect(res.json.error.message).toContain('filename');
  });

  it('refuses malformed upload_urls bodies with 400 naming the field', async () => {
    const created = await aloCall('GET', `/vms/incidents/${INCIDENT}/create_multipart_upload`, {
      query: { file_id: 'v', filename: 'v.mov' },
    });
    const { s3_key, upload_id } = created.json as { s3_key: string; upload_id: string };
    const cases: Array<[unknown, string]> = [
      [{}, 'files'],
      [{ files: {} }, 'files'],
      [{ files: { f: {} } }, 'files.f.filename'],
      [{ files: { f: { filename: '' } } }, 'files.f.filename'],
      [{ files: { f: { filename: 'x.jpg', part_count: 2 } } }, 'files.f'],
      [{ files: { f: { part_count: 2, s3_key } } }, 'files.f.upload_id'],
      [{ files: { f: { part_count: 0, s3_key, upload_id } } }, 'files.f.part_count'],
      [{ files: { f: { part_count: 10_001, s3_key, upload_id } } }, 'files.f.part_count'],
      [{ files: { f: { part_count: 1.5, s3_key, upload_id } } }, 'files.f.part_count'],
      [{ files: { f: { part_count: '2', s3_key, upload_id } } }, 'files.f.part_count'],
      [{ files: { f: { filename: 'x.jpg', extra: true } } }, 'files.f'],
    ];
    for (const [body, field] of cases) {
      const res = await aloCall('POST', `/vms/incidents/${INCIDENT}/upload_urls`, { body });
      expect({ body, status: res.status }).toEqual({ body, status: 400 });
      expect(res.json.error.message).toContain(field);
    }

    const unknown = await aloCall('POST', `/vms/incidents/${INCIDENT}/upload_urls`, {
      body: { files: { f: { part_count: 1, s3_key, upload_id: 'not-an-upload' } } },
    });
    expect(unknown.status).toBe(404);
    const otherIncident = await aloCall('POST', '/vms/incidents/another-incident/upload_urls', {
      body: { files: { f: { part_count: 1, s3_key, upload_id } } },
    });
    expect(otherIncident.status).toBe(404);
    const notJson = await aloCall('POST', `/vms/incidents/${INCIDENT}/upload_urls`, {
      body: { files: { f: { filename: 'x.jpg' } } },
      headers: { 'content-type': 'text/plain' },
    });
    expect(notJson.status).toBe(415);
  });

  it('returns one signed URL string for a single upload, as the seed shows', async () => {
    const res = await aloCall('POST', `/vms/incidents/${INCIDENT}/upload_urls`, {
      body: { files: { thumb: { filename: 'thumb.jpg' } } },
    });
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ incident_id: INCIDENT, max_upload_size_mb: -1 });
    const { s3_key, signed_urls } = res.json.uploads.thumb as { s3_key: string; signed_urls: unknown };
    expect(typeof signed_urls).toBe('string');
    expect(s3_key).toMatch(
      new RegExp(`^vms/08697d4a-dd01-457f-a4f7-823f0ab35814/[0-9a-f-]{36}/${INCIDENT}/thumb\\.jpg$`),
    );
    expect(new URL(signed_urls as string).searchParams.get('X-Amz-Expires')).toBe('7200');
    const data = randomBytes(2048);
    expect((await s3Put(signed_urls as string, data)).status).toBe(200);
    expect(await store.objectSha256(s3_key)).toBe(sha256(data));
  });

  it('validates PUT incident, creates (201), updates (200) and serves the GET shape', async () => {
    const id = 'f0e1d2c3-0000-4000-8000-000000000001';
    expect((await aloCall('GET', `/vms/incidents/${id}`)).status).toBe(404);

    const urls = await aloCall('POST', `/vms/incidents/${id}/upload_urls`, {
      body: { files: { video: { filename: 'good.mov' }, video_thumbnail: { filename: 'good.jpg' } } },
    });
    const video = urls.json.uploads.video as { s3_key: string; signed_urls: string };
    const thumb = urls.json.uploads.video_thumbnail as { s3_key: string; signed_urls: string };
    expect((await s3Put(video.signed_urls, randomBytes(4096))).status).toBe(200);

    const uploaded = {
      id: 'good-file-2',
      started_at: '2024-02-02T11:49:22Z',
      ended_at: '2024-02-02T11:51:32Z',
      camera_id: '01000000-0001-babe-0007-48ea632b7f71',
      camera_name: '192.168.0.241 - Camera - 01a',
      camera_description: '',
      camera_latitude: 0.0,
      camera_longitude: 0.0,
      s3_key: video.s3_key,
      s3_thumbnail_key: thumb.s3_key,
    };
    const failed = {
      id: 'bad-file-2',
      started_at: '2024-02-02T11:49:22Z',
      camera_name: '192.168.0.241 - Camera - 01',
      errors: ['G64 export failed with: No video available for the camera during the selected time period.'],
    };
    const incident = {
      title: 'Hey There!!',
      description: 'Something else description',
      created_at: '2024-02-02T11:04:41.03Z',
      updated_at: '2024-02-02T12:01:19.643Z',
      incident_at: '2023-02-02T11:04:12.987Z',
      latitude: 0.0,
      longitude: 0.0,
    };

    // The thumbnail was never uploaded, so ALO has nothing under that key.
    const noThumb = await aloCall('PUT', `/vms/incidents/${id}`, {
      body: { vms_incident: { ...incident, uploaded_videos: [uploaded], failed_videos: [failed] } },
    });
    expect(noThumb.status).toBe(400);
    expect(noThumb.json.error.message).toContain('vms_incident.uploaded_videos[0].s3_thumbnail_key');
    const unknownKey = await aloCall('PUT', `/vms/incidents/${id}`, {
      body: { vms_incident: { uploaded_videos: [{ id: 'x', s3_key: 'vms/never/uploaded.mov' }] } },
    });
    expect(unknownKey.status).toBe(400);
    expect(unknownKey.json.error.message).toContain('vms_incident.uploaded_videos[0].s3_key');
    // An object uploaded for this incident is not another incident's, byte-identical or not.
    const other = await aloCall('PUT', `/vms/incidents/${INCIDENT}`, {
      body: { vms_incident: { uploaded_videos: [{ id: 'x', s3_key: video.s3_key }] } },
    });
    expect(other.status).toBe(400);
    expect(other.json.error.message).toBe(`vms_incident.uploaded_videos[0].s3_key: s3_key "${video.s3_key}" was never handed out for this incident`);

    const invalid: Array<[unknown, string]> = [
      [{}, 'vms_incident'],
      [{ vms_incident: { incident_at: '2 Feb 2023' } }, 'vms_incident.incident_at'],
      [{ vms_incident: { latitude: '0' } }, 'vms_incident.latitude'],
      [{ vms_incident: { failed_videos: [{ id: 'a' }] } }, 'vms_incident.failed_videos[0].errors'],
      [{ vms_incident: { failed_videos: [{ id: 'a', errors: [] }] } }, 'vms_incident.failed_videos[0].errors'],
      [{ vms_incident: { failed_videos: [{ id: '', errors: ['e'] }] } }, 'vms_incident.failed_videos[0].id'],
      [{ vms_incident: { failed_videos: [{ id: 'a', upload_errors: ['e'] }] } }, 'vms_incident.failed_videos[0]'],
      [
        { vms_incident: { failed_videos: [{ id: 'a', errors: ['e'] }, { id: 'a', errors: ['f'] }] } },
        'vms_incident.failed_videos[1].id',
      ],
    ];
    for (const [body, field] of invalid) {
      const res = await aloCall('PUT', `/vms/incidents/${id}`, { body });
      expect({ body, status: res.status }).toEqual({ body, status: 400 });
      expect(res.json.error.message).toContain(field);
    }
    expect((await aloCall('GET', `/vms/incidents/${id}`)).status).toBe(404);

    expect((await s3Put(thumb.signed_urls, randomBytes(512))).status).toBe(200);
    const created = await aloCall('PUT', `/vms/incidents/${id}`, {
      body: { vms_incident: { ...incident, uploaded_videos: [], failed_videos: [failed] } },
    });
    expect(created.status).toBe(201);
    const updated = await aloCall('PUT', `/vms/incidents/${id}`, {
      body: { vms_incident: { ...incident, uploaded_videos: [uploaded], failed_videos: [failed] } },
    });
    expect(updated.status).toBe(200);

    const got = await aloCall('GET', `/vms/incidents/${id}`);
    expect(got.status).toBe(200);
    expect(got.json).toEqual(updated.json);
    expect(got.json.vms_incident).toEqual({
      id,
      title: 'Hey There!!',
      description: 'Something else description',
      incident_at: '2023-02-02T11:04:12.987Z',
      created_at: '2024-02-02T11:04:41.030Z',
      updated_at: '2024-02-02T12:01:19.643Z',
      longitude: 0,
      latitude: 0,
      uploaded_videos: [
        {
          id: 'good-file-2',
          started_at: '2024-02-02T11:49:22.000Z',
          ended_at: '2024-02-02T11:51:32.000Z',
          camera_name: '192.168.0.241 - Camera - 01a',
          camera_description: '',
          camera_longitude: 0,
          camera_latitude: 0,
          s3_key: video.s3_key,
          s3_thumbnail_key: thumb.s3_key,
        },
      ],
      failed_videos: [
        {
          id: 'bad-file-2',
          started_at: '2024-02-02T11:49:22.000Z',
          ended_at: null,
          camera_name: '192.168.0.241 - Camera - 01',
          camera_description: null,
          camera_longitude: null,
          camera_latitude: null,
          upload_errors: failed.errors,
        },
      ],
    });
    expect(alo.incident(id)).toEqual(got.json.vms_incident);

    // A later report replaces the lists rather than merging into them.
    await aloCall('PUT', `/vms/incidents/${id}`, { body: { vms_incident: { uploaded_videos: [uploaded] } } });
    expect(alo.incident(id)?.failed_videos).toEqual([]);
    expect(alo.reports.filter((r) => r.incidentId === id).map((r) => r.status)).toEqual([
      400, 400, ...invalid.map(() => 400), 201, 200, 200,
    ]);
  });

  it('fails or resets the next calls of a route when told to', async () => {
    alo.failNext('get_incident', 2);
    alo.failNext('put_incident', 1, 500);
    expect((await aloCall('GET', `/vms/incidents/${INCIDENT}`)).status).toBe(503);
    expect((await aloCall('GET', `/vms/incidents/${INCIDENT}`)).status).toBe(503);
    expect((await aloCall('GET', `/vms/incidents/${INCIDENT}`)).status).toBe(404);
    const failedPut = await aloCall('PUT', `/vms/incidents/${INCIDENT}`, { body: { vms_incident: { title: 't' } } });
    expect(failedPut.status).toBe(500);
    expect(alo.incident(INCIDENT)).toBeUndefined();

    alo.resetNext('put_incident', 1);
    const put = aloCall('PUT', `/vms/incidents/${INCIDENT}`, { body: { vms_incident: { title: 't' } } });
    await expect(put).rejects.toThrow();
    expect(alo.incident(INCIDENT)).toBeUndefined();
    expect(alo.calls.at(-1)).toMatchObject({ route: 'put_incident', status: 0, incidentId: INCIDENT });

    // A complete whose answer is lost has still happened: the retry then meets 404 NoSuchUpload.
    const { s3Key, uploadId, etags } = await uploadMultipart(INCIDENT, 'mp-lost', [randomBytes(100)]);
    alo.resetNext('complete_multipart_upload', 1, 'after');
    const body = { s3_key: s3Key, upload_id: uploadId, parts: etags };
    await expect(aloCall('POST', `/vms/incidents/${INCIDENT}/complete_multipart_upload`, { body })).rejects.toThrow();
    expect(store.hasObject(s3Key)).toBe(true);
    expect((await aloCall('POST', `/vms/incidents/${INCIDENT}/complete_multipart_upload`, { body })).status).toBe(404);
  });
});
