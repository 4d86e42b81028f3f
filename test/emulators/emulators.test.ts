import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AION_TEST_KEY, startAionvisionEmulator, type AionvisionEmulator } from './aionvision.js';
import { startAloEmulator, type AloEmulator } from './alo.js';
import { S3Error, startS3Store, type S3Store } from './s3-store.js';

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
  return url.replace(/(X-Amz-Signature=[0-9a-f]{63})([0-9a-f])/, (_m, head: string, last: string) => head + (last === '0' ? '1' : '0'));
}

function xmlCode(text: string): string | undefined {
  return xmlField(text, 'Code');
}

/** One element of S3's XML error document (the store escapes nothing in the values used here). */
function xmlField(text: string, name: string): string | undefined {
  return new RegExp(`<${name}>([^<]*)</${name}>`).exec(text)?.[1];
}

/** The data with the bits of one byte inverted, as the store's `corrupt` fault stores it. */
function flipByte(data: Buffer, at: number): Buffer {
  const copy = Buffer.from(data);
  copy[at] = copy[at]! ^ 0xff;
  return copy;
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
    // The record keeps S3's message and the request target exactly as sent, signature and all.
    const { pathname, search } = new URL(url);
    expect(store.requests.at(-1)).toMatchObject({
      key,
      status: 403,
      code: 'AccessDenied',
      message: 'Request has expired',
      url: pathname + search,
    });
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

  it('refuses a presigned PUT that also carries an Authorization header with 400 InvalidArgument, as S3 does', async () => {
    const key = 'vms/test/two-auths.mov';
    const url = await store.presignPutObject(key, 60);
    const data = randomBytes(100);
    // Even a header that is itself a valid-looking SigV4 signature is a second mechanism.
    for (const authorization of [
      'Bearer alo-test-token',
      `AWS4-HMAC-SHA256 Credential=AKIAALOEMULATOR00001/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=${'0'.repeat(64)}`,
    ]) {
      const put = await s3Put(url, data, { authorization });
      expect(put.status).toBe(400);
      expect(xmlCode(put.text)).toBe('InvalidArgument');
      expect(xmlField(put.text, 'Message')).toBe(
        'Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified',
      );
      expect(xmlField(put.text, 'ArgumentName')).toBe('Authorization');
      // Real S3 gives the header's value back: a token sent to a presigned URL ends up in this body.
      expect(xmlField(put.text, 'ArgumentValue')).toBe(authorization);
      expect(store.requests.at(-1)).toMatchObject({ key, status: 400, code: 'InvalidArgument', bytesReceived: 0 });
      expect(store.requests.at(-1)?.headers['authorization']).toBe(authorization);
    }
    expect(store.hasObject(key)).toBe(false);

    // Without query authentication, a bearer token is no S3 auth scheme at all.
    const bare = await s3Put(`${store.origin}/${store.bucket}/${key}`, data, { authorization: 'Bearer alo-test-token' });
    expect(bare.status).toBe(400);
    expect(xmlCode(bare.text)).toBe('InvalidArgument');
    expect(xmlField(bare.text, 'Message')).toBe('Unsupported Authorization Type');

    // The same URL without the header is fine: the refusal was the header's, not the URL's.
    expect((await s3Put(url, data)).status).toBe(200);
    expect(await store.objectSha256(key)).toBe(sha256(data));
  });

  it("records every request's headers, names lower-cased and values as received, refused requests too", async () => {
    const key = 'vms/test/headers.mov';
    const url = new URL(await store.presignPutObject(key, 60));
    const data = randomBytes(64);
    const ok = await s3Put(url.href, data, { 'Content-Type': 'Video/MP4', 'X-Trace-Note': 'a  b' });
    expect(ok.status).toBe(200);
    expect(store.requests.at(-1)).toMatchObject({
      key,
      status: 200,
      headers: { host: url.host, 'content-type': 'Video/MP4', 'content-length': '64', 'x-trace-note': 'a  b' },
    });
    expect(store.requests.at(-1)?.headers).not.toHaveProperty('authorization');

    // Node keeps only the first of repeated Authorization headers in req.headers; the record keeps both.
    const socket = net.connect(Number(url.port), url.hostname);
    await new Promise((resolve) => socket.once('connect', resolve));
    let answer = '';
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
    socket.end(
      `PUT ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: Bearer first\r\n` +
        `AUTHORIZATION: Bearer second\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
    );
    await new Promise((resolve) => socket.once('close', resolve));
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(xmlCode(answer)).toBe('InvalidArgument');
    expect(store.requests.at(-1)).toMatchObject({ key, status: 400, headers: { authorization: 'Bearer first, Bearer second' } });
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
    expect(s3Key).toMatch(new RegExp(`^vms/08697d4a-dd01-457f-a4f7-823f0ab35814/[0-9a-f-]{36}/${INCIDENT}/mp-ok_clip 01\\.mov$`));
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

  it('a read in progress sees the object it began with, though a completion replaces it meanwhile', async () => {
    const key = 'vms/test/overwritten.mov';
    const putParts = async (parts: Buffer[]) => {
      const uploadId = store.createMultipartUpload(key);
      const etags: string[] = [];
      for (const [i, part] of parts.entries())
        etags.push((await s3Put(await store.presignUploadPart(key, uploadId, i + 1, 60), part)).etag!);
      return () => store.completeMultipartUpload(key, uploadId, etags);
    };
    const first = [randomBytes(5 * MiB), randomBytes(1000)];
    (await putParts(first))();
    const completeSecond = await putParts([randomBytes(5 * MiB), randomBytes(2000)]);
    // The read opens the second blob only after the first is hashed, long after the replacement.
    const reading = store.objectSha256(key);
    completeSecond();
    await expect(reading).resolves.toBe(sha256(Buffer.concat(first)));
    expect(store.objectSize(key)).toBe(5 * MiB + 2000);
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

  it('keeps every URL it minted with the object, part and upload it was minted for', async () => {
    const before = Date.now();
    const single = await store.presignPutObject('vms/test/minted.mov', 60);
    const part = await store.presignUploadPart('vms/test/minted-mp.mov', 'an-upload-id', 3, 60);
    expect(store.presigned.slice(-2)).toEqual([
      { url: single, key: 'vms/test/minted.mov', at: expect.any(Number) },
      { url: part, key: 'vms/test/minted-mp.mov', partNumber: 3, uploadId: 'an-upload-id', at: expect.any(Number) },
    ]);
    expect(store.presigned.at(-1)!.at).toBeGreaterThanOrEqual(before);
    expect(store.presignedUrls.slice(-2)).toEqual([single, part]);
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

  it('wrong-etag keeps the part as sent but answers an ETag that is not its MD5', async () => {
    const key = 'vms/test/wrong-etag.mov';
    const uploadId = store.createMultipartUpload(key);
    const parts = [randomBytes(5 * MiB), randomBytes(4096)];
    store.injectFaults({ kind: 'wrong-etag', partNumber: 2 });

    const put1 = await s3Put(await store.presignUploadPart(key, uploadId, 1, 60), parts[0]!);
    expect(put1).toMatchObject({ status: 200, etag: `"${md5(parts[0]!)}"` });
    const put2 = await s3Put(await store.presignUploadPart(key, uploadId, 2, 60), parts[1]!);
    expect(put2.status).toBe(200);
    // Well-formed (quoted, 32 hex), so only a comparison with the body's own MD5 shows it is wrong.
    expect(put2.etag).toMatch(/^"[0-9a-f]{32}"$/);
    expect(put2.etag).not.toBe(`"${md5(parts[1]!)}"`);
    expect(store.requests.at(-1)).toMatchObject({ key, partNumber: 2, status: 200, code: 'InjectedWrongETag', bytesReceived: 4096 });
    // S3 holds the true part: ListParts and completion know only its real MD5.
    expect(store.listParts(key, uploadId)).toEqual([
      { partNumber: 1, etag: md5(parts[0]!), size: 5 * MiB },
      { partNumber: 2, etag: md5(parts[1]!), size: 4096 },
    ]);
    expect(() => store.completeMultipartUpload(key, uploadId, [put1.etag!, put2.etag!])).toThrow(
      expect.objectContaining({ status: 400, code: 'InvalidPart' }),
    );

    // Taken once: the part sent again is answered truthfully.
    const again = await s3Put(await store.presignUploadPart(key, uploadId, 2, 60), parts[1]!);
    expect(again).toMatchObject({ status: 200, etag: `"${md5(parts[1]!)}"` });
    store.completeMultipartUpload(key, uploadId, [put1.etag!, again.etag!]);
    expect(await store.objectSha256(key)).toBe(sha256(Buffer.concat(parts)));
  });

  it('corrupt stores the body with one byte inverted and answers the MD5 of what it stored', async () => {
    const key = 'vms/test/corrupt.mov';
    const uploadId = store.createMultipartUpload(key);
    // 1 MiB arrives in many socket chunks: the byte at 700 000 is inside one of the later ones.
    const parts = [randomBytes(5 * MiB), randomBytes(1 * MiB)];
    store.injectFaults({ kind: 'corrupt', partNumber: 2, atByte: 700_000 });

    const put1 = await s3Put(await store.presignUploadPart(key, uploadId, 1, 60), parts[0]!);
    expect(put1).toMatchObject({ status: 200, etag: `"${md5(parts[0]!)}"` });
    const put2 = await s3Put(await store.presignUploadPart(key, uploadId, 2, 60), parts[1]!);
    const stored = flipByte(parts[1]!, 700_000);
    expect(put2).toMatchObject({ status: 200, etag: `"${md5(stored)}"` });
    expect(put2.etag).not.toBe(`"${md5(parts[1]!)}"`);
    expect(store.requests.at(-1)).toMatchObject({ key, partNumber: 2, status: 200, code: 'InjectedCorruption', bytesReceived: MiB });
    expect(store.listParts(key, uploadId)[1]).toEqual({ partNumber: 2, etag: md5(stored), size: MiB });

    // Nothing on S3's side is inconsistent: completion with the answered ETags succeeds, corrupt bytes and all.
    store.completeMultipartUpload(key, uploadId, [put1.etag!, put2.etag!]);
    expect(store.objectSize(key)).toBe(6 * MiB);
    expect(await store.objectSha256(key)).toBe(sha256(Buffer.concat([parts[0]!, stored])));

    // A single PUT, default position: the middle byte.
    const single = 'vms/test/corrupt-single.mov';
    const data = randomBytes(1001);
    store.injectFaults({ kind: 'corrupt', key: single });
    const put = await s3Put(await store.presignPutObject(single, 60), data);
    expect(put).toMatchObject({ status: 200, etag: `"${md5(flipByte(data, 500))}"` });
    expect(await store.objectSha256(single)).toBe(sha256(flipByte(data, 500)));
  });

  it('hold-answer keeps the part and records it accepted, but never answers', async () => {
    const key = 'vms/test/held.mov';
    const uploadId = store.createMultipartUpload(key);
    const data = randomBytes(4096);
    store.injectFaults({ kind: 'hold-answer', partNumber: 1 });
    const url = await store.presignUploadPart(key, uploadId, 1, 60);
    const put = request(url, { method: 'PUT', body: data, signal: AbortSignal.timeout(1000) });
    await expect(put).rejects.toThrow(/abort|timeout/i);
    expect(store.requests.at(-1)).toMatchObject({ key, partNumber: 1, status: 200, code: 'AnswerHeld', bytesReceived: 4096 });
    expect(store.listParts(key, uploadId)).toEqual([{ partNumber: 1, etag: md5(data), size: 4096 }]);
    // Taken once: the part sent again is answered.
    expect(await s3Put(url, data)).toMatchObject({ status: 200, etag: `"${md5(data)}"` });
    store.abortMultipartUpload(key, uploadId);
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
    expect(s3_key).toMatch(new RegExp(`^vms/08697d4a-dd01-457f-a4f7-823f0ab35814/[0-9a-f-]{36}/${INCIDENT}/thumb\\.jpg$`));
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
    expect(other.json.error.message).toBe(
      `vms_incident.uploaded_videos[0].s3_key: s3_key "${video.s3_key}" was never handed out for this incident`,
    );

    const invalid: Array<[unknown, string]> = [
      [{}, 'vms_incident'],
      [{ vms_incident: { incident_at: '2 Feb 2023' } }, 'vms_incident.incident_at'],
      [{ vms_incident: { latitude: '0' } }, 'vms_incident.latitude'],
      [{ vms_incident: { failed_videos: [{ id: 'a' }] } }, 'vms_incident.failed_videos[0].errors'],
      [{ vms_incident: { failed_videos: [{ id: 'a', errors: [] }] } }, 'vms_incident.failed_videos[0].errors'],
      [{ vms_incident: { failed_videos: [{ id: '', errors: ['e'] }] } }, 'vms_incident.failed_videos[0].id'],
      [{ vms_incident: { failed_videos: [{ id: 'a', upload_errors: ['e'] }] } }, 'vms_incident.failed_videos[0]'],
      [
        {
          vms_incident: {
            failed_videos: [
              { id: 'a', errors: ['e'] },
              { id: 'a', errors: ['f'] },
            ],
          },
        },
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
      400,
      400,
      ...invalid.map(() => 400),
      201,
      200,
      200,
    ]);
  });

  it('refuses a file at complete_multipart_upload when told to, leaving its upload open to abort', async () => {
    const { s3Key, uploadId, etags } = await uploadMultipart(INCIDENT, 'mp-refused', [randomBytes(100)]);
    alo.refuseFile('mp-refused', 'policy forbids this clip', 'complete_multipart_upload');
    const body = { s3_key: s3Key, upload_id: uploadId, parts: etags };
    const refused = await aloCall('POST', `/vms/incidents/${INCIDENT}/complete_multipart_upload`, { body });
    expect(refused).toEqual({ status: 422, json: { error: { code: 422, message: 'policy forbids this clip' } } });
    expect(store.hasObject(s3Key)).toBe(false);
    expect(store.openMultipartUploads().some((u) => u.uploadId === uploadId)).toBe(true);
    const aborted = await aloCall('GET', `/vms/incidents/${INCIDENT}/abort_multipart_upload`, {
      query: { s3_key: s3Key, upload_id: uploadId },
    });
    expect(aborted.status).toBe(200);
    expect(store.openMultipartUploads().some((u) => u.uploadId === uploadId)).toBe(false);
    expect(alo.calls.filter((c) => c.route === 'complete_multipart_upload').at(-1)).toMatchObject({ status: 422, at: expect.any(Number) });
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

describe('Aionvision API', () => {
  // 5 MiB, S3's minimum for a part other than the last: the smallest chunk size that can be completed.
  const CHUNK = 5 * MiB;
  let aion: AionvisionEmulator;

  beforeAll(async () => {
    aion = await startAionvisionEmulator({ store, chunkSizeBytes: CHUNK });
  });

  afterAll(async () => {
    await aion?.close();
  });

  interface AionResponse {
    status: number;
    json: any;
    headers: Record<string, string | string[] | undefined>;
  }

  async function aionCall(
    method: 'GET' | 'POST',
    path: string,
    opts: { body?: unknown; headers?: Record<string, string> } = {},
  ): Promise<AionResponse> {
    const headers: Record<string, string> = { authorization: `Bearer ${AION_TEST_KEY}`, ...opts.headers };
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers['content-type'] ??= 'application/json';
    }
    const res = await request(`${aion.baseUrl}${path}`, { method, headers, body });
    const text = await res.body.text();
    return { status: res.statusCode, json: text ? JSON.parse(text) : undefined, headers: res.headers };
  }

  interface Initiated {
    media_id: string;
    upload_id: string;
    chunks: Array<{ chunk_number: number; upload_url: string; size_bytes: number }>;
  }

  async function initiate(filename: string, size: number): Promise<Initiated> {
    const res = await aionCall('POST', '/video-uploads/initiate', { body: { filename, content_type: 'video/mp4', size_bytes: size } });
    expect(res.status).toBe(200);
    return res.json as Initiated;
  }

  /** PUT one chunk to its presigned URL the way the seed's example does. */
  function putChunk(session: Initiated, n: number, data: Buffer) {
    return s3Put(session.chunks[n - 1]!.upload_url, data, { 'content-type': 'video/mp4' });
  }

  function confirm(session: Initiated, body: Record<string, unknown>) {
    return aionCall('POST', '/video-uploads/chunks/confirm', {
      body: { media_id: session.media_id, upload_id: session.upload_id, ...body },
    });
  }

  it('refuses every route without the API key or with a wrong one (401 with a Bearer challenge), carrying nothing out', async () => {
    const session = await initiate('auth.mp4', 100);
    const ids = { media_id: session.media_id, upload_id: session.upload_id };
    const routes: Array<['GET' | 'POST', string, unknown]> = [
      ['POST', '/video-uploads/initiate', { filename: 'x.mp4', content_type: 'video/mp4', size_bytes: 100 }],
      ['POST', '/video-uploads/chunks/confirm', { ...ids, chunk_number: 1, etag: md5(Buffer.alloc(0)), size_bytes: 100 }],
      ['POST', '/video-uploads/chunks/retry', { ...ids, chunk_number: 1 }],
      ['POST', '/video-uploads/complete', ids],
      ['POST', '/video-uploads/abort', ids],
      ['GET', `/video-uploads/progress/${session.media_id}`, undefined],
    ];
    const uploadsBefore = aion.uploads.size;
    const credentials: Array<[Record<string, string>, string]> = [
      [{ authorization: '' }, 'Invalid API key'],
      [{ authorization: 'Bearer wrong-key' }, 'Invalid API key'],
      // The key alone, or under another scheme, is not the documented "Bearer <key>".
      [{ authorization: AION_TEST_KEY }, 'Invalid API key'],
      [{ authorization: `Token ${AION_TEST_KEY}` }, 'Invalid API key'],
      [{ 'x-api-key': AION_TEST_KEY }, 'missing authorization header'],
    ];
    for (const [method, path, body] of routes) {
      for (const [headers, detail] of credentials) {
        const { authorization, ...others } = headers;
        const res = await request(`${aion.baseUrl}${path}`, {
          method,
          headers: {
            ...(authorization === undefined ? {} : { authorization }),
            ...others,
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        const json = await res.body.json();
        expect({ path, headers, status: res.statusCode, json }).toEqual({ path, headers, status: 401, json: { detail } });
        expect(res.headers['www-authenticate']).toBe('Bearer');
      }
    }
    expect(aion.uploads.size).toBe(uploadsBefore);
    expect(aion.uploads.get(session.media_id)).toMatchObject({ status: 'uploading', confirmed: new Map() });
    expect(store.openMultipartUploads().some((u) => u.uploadId === session.upload_id)).toBe(true);
  });

  it('refuses a confirm whose ETag, size or chunk number does not match what S3 holds', async () => {
    const data = randomBytes(CHUNK + 1000);
    const session = await initiate('confirm.mp4', data.length);
    expect(session.chunks.map((c) => [c.chunk_number, c.size_bytes])).toEqual([
      [1, CHUNK],
      [2, 1000],
    ]);
    const chunk1 = data.subarray(0, CHUNK);
    const put = await putChunk(session, 1, chunk1);
    expect(put).toMatchObject({ status: 200, etag: `"${md5(chunk1)}"` });

    const refusals: Array<[Record<string, unknown>, number, string]> = [
      [{ chunk_number: 1, etag: `"${md5(randomBytes(10))}"`, size_bytes: CHUNK }, 400, 'etag: '],
      // Chunk 2's real ETag is not chunk 1's.
      [{ chunk_number: 1, etag: md5(data.subarray(CHUNK)), size_bytes: CHUNK }, 400, 'etag: '],
      [{ chunk_number: 1, etag: put.etag, size_bytes: CHUNK - 1 }, 400, 'size_bytes: chunk 1 is'],
      [{ chunk_number: 1, etag: put.etag, size_bytes: data.length }, 400, 'size_bytes: chunk 1 is'],
      [{ chunk_number: 0, etag: put.etag, size_bytes: CHUNK }, 400, 'chunk_number'],
      [{ chunk_number: 3, etag: put.etag, size_bytes: CHUNK }, 400, 'chunk_number: must be between 1 and 2'],
      [{ chunk_number: -1, etag: put.etag, size_bytes: CHUNK }, 400, 'chunk_number'],
      [{ chunk_number: 1.5, etag: put.etag, size_bytes: CHUNK }, 400, 'chunk_number'],
      [{ chunk_number: '1', etag: put.etag, size_bytes: CHUNK }, 400, 'chunk_number'],
      [{ chunk_number: 1, etag: '', size_bytes: CHUNK }, 400, 'etag'],
      // Not an ETag S3 gives, and S3 would refuse it at complete: refused here, not later.
      [{ chunk_number: 1, etag: `W/${put.etag}`, size_bytes: CHUNK }, 400, 'etag: '],
      [{ chunk_number: 1, etag: `"${put.etag}"`, size_bytes: CHUNK }, 400, 'etag: '],
      [{ chunk_number: 1, size_bytes: CHUNK }, 400, 'etag'],
      [{ chunk_number: 1, etag: put.etag, size_bytes: CHUNK, extra: true }, 400, 'extra'],
      // Right size, but nothing was PUT for chunk 2 yet.
      [{ chunk_number: 2, etag: md5(data.subarray(CHUNK)), size_bytes: 1000 }, 400, 'chunk_number: chunk 2 has not been uploaded'],
      [{ chunk_number: 1, etag: put.etag, size_bytes: CHUNK, upload_id: 'not-this-upload' }, 400, 'upload_id'],
      [{ chunk_number: 1, etag: put.etag, size_bytes: CHUNK, media_id: 'no-such-media' }, 404, 'media_id'],
    ];
    for (const [body, status, detail] of refusals) {
      const res = await confirm(session, body);
      expect({ body, status: res.status }).toEqual({ body, status });
      expect(res.json.detail).toContain(detail);
    }
    const notJson = await aionCall('POST', '/video-uploads/chunks/confirm', {
      body: { media_id: session.media_id, upload_id: session.upload_id, chunk_number: 1, etag: put.etag, size_bytes: CHUNK },
      headers: { 'content-type': 'text/plain' },
    });
    expect(notJson.status).toBe(415);
    const progress = await aionCall('GET', `/video-uploads/progress/${session.media_id}`);
    expect(progress.json).toMatchObject({ status: 'uploading', confirmed_chunks: [], uploaded_bytes: 0 });

    // A chunk of the wrong length is held by S3 but refused at confirm, whatever size_bytes claims.
    const short = await putChunk(session, 2, data.subarray(CHUNK, CHUNK + 999));
    expect(short.status).toBe(200);
    const wrongLength = await confirm(session, { chunk_number: 2, etag: short.etag, size_bytes: 1000 });
    expect(wrongLength.status).toBe(400);
    expect(wrongLength.json.detail).toBe('chunk_number: S3 holds 999 bytes for chunk 2, which is 1000 bytes');

    // The bare (unquoted) ETag S3 answered is the same ETag.
    const ok = await confirm(session, { chunk_number: 1, etag: put.etag!.replace(/"/g, ''), size_bytes: CHUNK });
    expect(ok.status).toBe(200);
  });

  it('refuses complete until every chunk is confirmed, and with a confirmed ETag S3 no longer holds', async () => {
    const data = randomBytes(CHUNK + 2000);
    const chunks = [data.subarray(0, CHUNK), data.subarray(CHUNK)];
    const session = await initiate('early.mp4', data.length);
    const ids = { media_id: session.media_id, upload_id: session.upload_id };

    const none = await aionCall('POST', '/video-uploads/complete', { body: ids });
    expect(none.status).toBe(400);
    expect(none.json).toEqual({ detail: 'chunks not confirmed: 1, 2' });

    const put1 = await putChunk(session, 1, chunks[0]!);
    expect((await confirm(session, { chunk_number: 1, etag: put1.etag, size_bytes: CHUNK })).status).toBe(200);
    // Uploaded but not confirmed counts as not confirmed.
    const put2 = await putChunk(session, 2, chunks[1]!);
    expect(put2.status).toBe(200);
    const half = await aionCall('POST', '/video-uploads/complete', { body: ids });
    expect(half.status).toBe(400);
    expect(half.json).toEqual({ detail: 'chunks not confirmed: 2' });
    expect(aion.uploads.get(session.media_id)?.status).toBe('uploading');
    expect(store.hasObject(aion.uploads.get(session.media_id)!.s3Key)).toBe(false);

    const wrongSession = await aionCall('POST', '/video-uploads/complete', { body: { ...ids, upload_id: 'not-this-upload' } });
    expect(wrongSession.status).toBe(400);
    expect(wrongSession.json.detail).toContain('upload_id');

    // Chunk 2 confirmed, then sent again with other bytes: the confirmed ETag is no longer S3's.
    expect((await confirm(session, { chunk_number: 2, etag: put2.etag, size_bytes: 2000 })).status).toBe(200);
    const replaced = randomBytes(2000);
    expect((await putChunk(session, 2, replaced)).status).toBe(200);
    const stale = await aionCall('POST', '/video-uploads/complete', { body: ids });
    expect(stale.status).toBe(400);
    expect(stale.json.detail).toContain('InvalidPart');
    expect(aion.uploads.get(session.media_id)?.status).toBe('uploading');

    // Confirming the chunk again with its new ETag makes the upload completable.
    expect((await confirm(session, { chunk_number: 2, etag: `"${md5(replaced)}"`, size_bytes: 2000 })).status).toBe(200);
    expect((await aionCall('POST', '/video-uploads/complete', { body: ids })).status).toBe(200);
    expect(await store.objectSha256(aion.uploads.get(session.media_id)!.s3Key)).toBe(sha256(Buffer.concat([chunks[0]!, replaced])));
  });

  it('initiate → PUT chunks → confirm each → complete: progress follows, the object is the file and S3 saw no API key', async () => {
    const data = randomBytes(2 * CHUNK + 12_345);
    const initiated = await aionCall('POST', '/video-uploads/initiate', {
      body: { filename: 'inspection.mp4', content_type: 'video/mp4', size_bytes: data.length },
    });
    expect(initiated.status).toBe(200);
    expect(initiated.json).toMatchObject({
      media_id: expect.any(String),
      upload_id: expect.any(String),
      total_chunks: 3,
      chunk_size_bytes: CHUNK,
    });
    const session = initiated.json as Initiated;
    expect(session.chunks.map((c) => [c.chunk_number, c.size_bytes])).toEqual([
      [1, CHUNK],
      [2, CHUNK],
      [3, 12_345],
    ]);
    for (const c of session.chunks) {
      const query = new URL(c.upload_url).searchParams;
      expect([query.get('partNumber'), query.get('uploadId'), query.get('X-Amz-Expires')]).toEqual([
        String(c.chunk_number),
        session.upload_id,
        '3600',
      ]);
    }
    const progressOf = async () => {
      const res = await aionCall('GET', `/video-uploads/progress/${session.media_id}`);
      expect(res.status).toBe(200);
      return res.json;
    };
    expect(await progressOf()).toEqual({
      media_id: session.media_id,
      status: 'uploading',
      total_chunks: 3,
      confirmed_chunks: [],
      uploaded_bytes: 0,
      size_bytes: data.length,
    });

    const putsBefore = store.requests.length;
    let offset: number;
    let confirmedBytes = 0;
    // Out of order on purpose: the platform numbers chunks, it does not require them in sequence.
    for (const n of [2, 1, 3]) {
      const c = session.chunks[n - 1]!;
      offset = (n - 1) * CHUNK;
      const bytes = data.subarray(offset, offset + c.size_bytes);
      const put = await putChunk(session, n, bytes);
      expect(put).toMatchObject({ status: 200, etag: `"${md5(bytes)}"` });
      // Uploaded, not yet confirmed: progress does not count it.
      expect((await progressOf()).uploaded_bytes).toBe(confirmedBytes);
      const confirmed = await confirm(session, { chunk_number: n, etag: put.etag, size_bytes: c.size_bytes });
      expect(confirmed.status).toBe(200);
      confirmedBytes += c.size_bytes;
      expect(confirmed.json).toEqual({
        media_id: session.media_id,
        chunk_number: n,
        status: 'confirmed',
        confirmed_chunks: [2, 1, 3].indexOf(n) + 1,
        total_chunks: 3,
      });
      expect(await progressOf()).toMatchObject({ status: 'uploading', uploaded_bytes: confirmedBytes });
    }
    expect((await progressOf()).confirmed_chunks).toEqual([1, 2, 3]);
    // Confirming a chunk again with the same ETag is harmless (a client retrying a lost answer).
    const reconfirm = await confirm(session, { chunk_number: 1, etag: `"${md5(data.subarray(0, CHUNK))}"`, size_bytes: CHUNK });
    expect(reconfirm.json).toMatchObject({ status: 'confirmed', confirmed_chunks: 3 });

    const completed = await aionCall('POST', '/video-uploads/complete', {
      body: { media_id: session.media_id, upload_id: session.upload_id },
    });
    expect(completed.status).toBe(200);
    expect(completed.json).toEqual({
      media_id: session.media_id,
      status: 'completed',
      filename: 'inspection.mp4',
      size_bytes: data.length,
    });
    expect(await progressOf()).toEqual({
      media_id: session.media_id,
      status: 'completed',
      total_chunks: 3,
      confirmed_chunks: [1, 2, 3],
      uploaded_bytes: data.length,
      size_bytes: data.length,
    });
    const s3Key = aion.uploads.get(session.media_id)!.s3Key;
    expect(await store.objectSha256(s3Key)).toBe(sha256(data));
    expect(store.openMultipartUploads().some((u) => u.uploadId === session.upload_id)).toBe(false);

    // The chunk PUTs carried the Content-Type the seed shows and no credentials of the platform.
    const puts = store.requests.slice(putsBefore).filter((r) => r.key === s3Key);
    expect(puts.map((r) => [r.partNumber, r.status])).toEqual([
      [2, 200],
      [1, 200],
      [3, 200],
    ]);
    for (const r of puts) {
      expect(r.headers['content-type']).toBe('video/mp4');
      expect(r.headers).not.toHaveProperty('authorization');
      expect(JSON.stringify(r.headers)).not.toContain(AION_TEST_KEY);
    }

    // Once completed, nothing more is accepted for it.
    const again = await aionCall('POST', '/video-uploads/complete', { body: { media_id: session.media_id, upload_id: session.upload_id } });
    expect(again.status).toBe(409);
    const late = await confirm(session, { chunk_number: 1, etag: `"${md5(data.subarray(0, CHUNK))}"`, size_bytes: CHUNK });
    expect(late.status).toBe(409);
    expect((await aionCall('GET', '/video-uploads/progress/no-such-media')).status).toBe(404);
  });

  it('retry hands out a working URL for a chunk in range only; the chunk URL refuses the API key', async () => {
    const data = randomBytes(3000);
    const session = await initiate('retry.mp4', data.length);
    const ids = { media_id: session.media_id, upload_id: session.upload_id };
    for (const chunk_number of [0, 2]) {
      const res = await aionCall('POST', '/video-uploads/chunks/retry', { body: { ...ids, chunk_number } });
      expect({ chunk_number, status: res.status }).toEqual({ chunk_number, status: 400 });
      expect(res.json.detail).toContain('chunk_number');
    }
    const retried = await aionCall('POST', '/video-uploads/chunks/retry', { body: { ...ids, chunk_number: 1 } });
    expect(retried.status).toBe(200);
    expect(retried.json).toEqual({ chunk_number: 1, upload_url: expect.any(String) });

    // A client that sends its platform credentials to S3 as well is refused there, and S3 shows the token.
    const withKey = await s3Put(retried.json.upload_url as string, data, {
      'content-type': 'video/mp4',
      authorization: `Bearer ${AION_TEST_KEY}`,
    });
    expect(withKey.status).toBe(400);
    expect(xmlCode(withKey.text)).toBe('InvalidArgument');
    expect(xmlField(withKey.text, 'ArgumentValue')).toBe(`Bearer ${AION_TEST_KEY}`);
    expect(store.listParts(aion.uploads.get(session.media_id)!.s3Key, session.upload_id)).toEqual([]);

    const put = await s3Put(retried.json.upload_url as string, data, { 'content-type': 'video/mp4' });
    expect(put).toMatchObject({ status: 200, etag: `"${md5(data)}"` });
    expect((await confirm(session, { chunk_number: 1, etag: put.etag, size_bytes: 3000 })).status).toBe(200);
    expect((await aionCall('POST', '/video-uploads/abort', { body: ids })).json).toEqual({ media_id: session.media_id, status: 'aborted' });
    expect(store.openMultipartUploads().some((u) => u.uploadId === session.upload_id)).toBe(false);
    const progress = await aionCall('GET', `/video-uploads/progress/${session.media_id}`);
    expect(progress.json).toMatchObject({ status: 'aborted', confirmed_chunks: [] });
  });

  it('refuses a file at every confirm when told to, once S3 holds its chunk; abort still releases it', async () => {
    const data = randomBytes(2000);
    aion.refuseFilename('refused-at-confirm.mp4', 'policy forbids this clip', { at: 'confirm' });
    const session = await initiate('refused-at-confirm.mp4', data.length);
    const put = await putChunk(session, 1, data);
    expect(put.status).toBe(200);
    for (let i = 0; i < 2; i++) {
      const refused = await confirm(session, { chunk_number: 1, etag: put.etag, size_bytes: data.length });
      expect(refused).toMatchObject({ status: 422, json: { detail: 'policy forbids this clip' } });
    }
    expect(aion.uploads.get(session.media_id)).toMatchObject({ status: 'uploading', confirmed: new Map() });
    const ids = { media_id: session.media_id, upload_id: session.upload_id };
    expect((await aionCall('POST', '/video-uploads/abort', { body: ids })).status).toBe(200);
    expect(store.openMultipartUploads().some((u) => u.uploadId === session.upload_id)).toBe(false);
  });

  it('checks a confirm against S3, not against the PUT answer: a wrong ETag is refused, corrupt bytes are not noticed', async () => {
    const data = randomBytes(4000);
    const wrong = await initiate('wrong-etag.mp4', data.length);
    store.injectFaults({ kind: 'wrong-etag', key: aion.uploads.get(wrong.media_id)!.s3Key });
    const lied = await putChunk(wrong, 1, data);
    expect(lied.status).toBe(200);
    expect(lied.etag).not.toBe(`"${md5(data)}"`);
    const refused = await confirm(wrong, { chunk_number: 1, etag: lied.etag, size_bytes: data.length });
    expect(refused.status).toBe(400);
    expect(refused.json.detail).toContain('etag: ');
    // The MD5 the client computed itself is what S3 holds.
    expect((await confirm(wrong, { chunk_number: 1, etag: `"${md5(data)}"`, size_bytes: data.length })).status).toBe(200);

    const corrupt = await initiate('corrupt.mp4', data.length);
    store.injectFaults({ kind: 'corrupt', key: aion.uploads.get(corrupt.media_id)!.s3Key, atByte: 0 });
    const damaged = await putChunk(corrupt, 1, data);
    expect(damaged).toMatchObject({ status: 200, etag: `"${md5(flipByte(data, 0))}"` });
    // The platform only sees S3's side, which is consistent: only the client's own MD5 can catch this.
    const accepted = await confirm(corrupt, { chunk_number: 1, etag: damaged.etag, size_bytes: data.length });
    expect(accepted.status).toBe(200);
    const wasSent = await confirm(corrupt, { chunk_number: 1, etag: `"${md5(data)}"`, size_bytes: data.length });
    expect(wasSent.status).toBe(400);
  });
});
