/**
 * The redaction every log line, error and ledger message goes through (src/log/redact.ts) and the
 * logger's use of it (src/log/logger.ts): the edge cases the end-to-end test
 * (test/smoke/log-secrets.test.ts) does not reach one by one.
 */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, describeError, serializeError } from '../../src/log/logger.js';
import { redactText, redactUrl, Secrets } from '../../src/log/redact.js';
import { TargetError } from '../../src/targets/target.js';

const SIG = 'fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024';
const CRED = 'AKIAIOSFODNN7EXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request';
const PRESIGNED = `https://s3.example.com/bucket/key.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=${CRED}&X-Amz-Date=20240101T000000Z&X-Amz-Expires=7200&X-Amz-SignedHeaders=host&X-Amz-Signature=${SIG}&partNumber=2&uploadId=abc`;

describe('redactUrl', () => {
  it('masks the signature and credential of a presigned URL and keeps what locates the part', () => {
    const out = redactUrl(PRESIGNED);
    expect(out).not.toContain(SIG);
    expect(out).not.toContain('AKIAIOSFODNN7EXAMPLE');
    expect(out).toContain('X-Amz-Signature=***');
    expect(out).toContain('X-Amz-Credential=***');
    expect(out).toContain('X-Amz-Expires=7200');
    expect(out).toContain('partNumber=2&uploadId=abc');
    expect(out.startsWith('https://s3.example.com/bucket/key.mp4?')).toBe(true);
  });

  it('masks access_token whatever the case or encoding of its name, and leaves other parameters', () => {
    expect(redactUrl('http://valt/api/v3/records?access_token=tok123456&x=1')).toBe('http://valt/api/v3/records?access_token=***&x=1');
    expect(redactUrl('http://valt/r?ACCESS_TOKEN=tok123456')).toBe('http://valt/r?ACCESS_TOKEN=***');
    expect(redactUrl('http://s3/b/k?X%2DAmz%2DSignature=abcdef')).toBe('http://s3/b/k?X%2DAmz%2DSignature=***');
    expect(redactUrl('http://s3/b/k?x-amz-security-token=abcdef')).toBe('http://s3/b/k?x-amz-security-token=***');
  });

  it('leaves a URL without a query, a parameter without a value, and a badly encoded name alone', () => {
    expect(redactUrl('http://host/path')).toBe('http://host/path');
    expect(redactUrl('http://host/path?flag&token=abc123')).toBe('http://host/path?flag&token=***');
    expect(redactUrl('http://host/path?%E0%A4%A=1')).toBe('http://host/path?%E0%A4%A=1');
  });
});

describe('redactText', () => {
  it('masks presigned-URL secrets inside free text and XML-escaped URLs', () => {
    const xml = `<Message>bad request PUT ${PRESIGNED.replace(/&/g, '&amp;')}</Message>`;
    const out = redactText(xml);
    expect(out).not.toContain(SIG);
    expect(out).not.toContain('AKIAIOSFODNN7EXAMPLE');
    expect(out).toContain('X-Amz-Signature=***');
  });

  it('masks Bearer tokens, including ones with characters outside the b64token set, and stops at a quote', () => {
    expect(redactText('Authorization: Bearer abc.DEF-123_~+/==')).toBe('Authorization: Bearer ***');
    expect(redactText('{"authorization":"Bearer tok:with!odd$chars","x":1}')).toBe('{"authorization":"Bearer ***","x":1}');
  });

  it('masks token-like JSON fields and query parameters in a response body', () => {
    expect(redactText('{"data":{"access_token":"t0k3n"},"accessToken":"t0k3n2","apiKey":"k3y","password":"pw"}')).toBe(
      '{"data":{"access_token":"***"},"accessToken":"***","apiKey":"***","password":"***"}',
    );
    expect(redactText('GET /api?access_token=abc123&page=2 failed')).toBe('GET /api?access_token=***&page=2 failed');
  });

  it('masks a registered secret in any framing, raw or URL-encoded', () => {
    const secrets = new Secrets();
    const key = 'unit-header-key/with+chars';
    expect(secrets.text(`{"x-api-key":"${key}"}`)).toContain(key); // not framed as anything the patterns know
    secrets.register(key);
    expect(secrets.text(`{"x-api-key":"${key}"}`)).toBe('{"x-api-key":"***"}');
    expect(secrets.text(`echo: x-api-key=${encodeURIComponent(key)}`)).toBe('echo: x-api-key=***');
    expect(secrets.url(`http://host/p/${key}/q`)).toBe('http://host/p/***/q');
    // Another daemon's registry (another logger) knows nothing of it: there is no shared state.
    expect(new Secrets().text(key)).toBe(key);
  });

  it('does not register values too short to be told from ordinary words', () => {
    const secrets = new Secrets();
    secrets.register('abc');
    expect(secrets.text('abc and abcdef')).toBe('abc and abcdef');
  });

  it('remembers the latest issued tokens only', () => {
    const secrets = new Secrets();
    const tokens = Array.from({ length: 70 }, (_, i) => `issued-token-${String(i).padStart(3, '0')}-zz`);
    for (const t of tokens) secrets.register(t, 'issued');
    expect(secrets.text(`now ${tokens[69]}`)).toBe('now ***');
    expect(secrets.text(`then ${tokens[0]}`)).toBe(`then ${tokens[0]}`);
  });

  it('masks the longer of two registered values that overlap whole', () => {
    const secrets = new Secrets();
    secrets.register('overlap-secret');
    secrets.register('overlap-secret-longer');
    expect(secrets.text('x overlap-secret-longer y')).toBe('x *** y');
  });

  it('masks the password of a URL, in a URL and in free text', () => {
    expect(redactUrl('http://user:pa55word@proxy.corp:3128')).toBe('http://user:***@proxy.corp:3128');
    expect(redactText('connect to http://user:pa55word@proxy.corp:3128 refused')).toBe(
      'connect to http://user:***@proxy.corp:3128 refused',
    );
  });
});

describe('serializeError and describeError', () => {
  it('keeps type, kind and code, masks the message, and drops stack and cause', () => {
    const err = new TargetError('retryable', `PUT ${PRESIGNED} answered 500`, { cause: new Error(`Bearer secretcause123`) });
    const out = serializeError(err);
    expect(out).toMatchObject({ type: 'TargetError', kind: 'retryable' });
    expect(JSON.stringify(out)).not.toContain(SIG);
    expect(JSON.stringify(out)).not.toContain('secretcause123');
    expect(out).not.toHaveProperty('stack');
    const coded = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    expect(serializeError(coded)).toEqual({ type: 'Error', message: 'connect ECONNREFUSED', code: 'ECONNREFUSED' });
  });

  it('turns anything thrown that is not an Error into a masked message', () => {
    expect(serializeError('Bearer abcdef123 refused')).toEqual({ message: 'Bearer *** refused' });
    expect(serializeError(undefined)).toEqual({ message: 'undefined' });
    expect(describeError({ toString: () => 'GET /x?access_token=abc123' })).toBe('GET /x?access_token=***');
  });
});

describe('the logger', () => {
  function capture(): { lines: () => Array<Record<string, unknown>>; stream: Writable } {
    const chunks: string[] = [];
    const stream = new Writable({
      write(chunk: Buffer, _enc, cb) {
        chunks.push(chunk.toString());
        cb();
      },
    });
    return {
      stream,
      lines: () =>
        chunks
          .join('')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, unknown>),
    };
  }

  it('masks secrets in the message, in nested fields and arrays, and in errors, at every level', () => {
    const { stream, lines } = capture();
    const log = createLogger('trace', new Secrets(), stream);
    const url = `http://valt/api?access_token=abc123456`;
    for (const level of ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const) {
      log[level](
        {
          event: 'test.line',
          reason: `PUT ${PRESIGNED}`,
          nested: { deeper: { url } },
          list: [`Bearer zzz999zzz`],
          err: new Error(`GET ${url}`),
        },
        `message ${url}`,
      );
    }
    const out = lines();
    expect(out.map((l) => l.level)).toEqual(['trace', 'debug', 'info', 'warn', 'error', 'fatal']);
    const text = JSON.stringify(out);
    for (const secret of [SIG, 'AKIAIOSFODNN7EXAMPLE', 'abc123456', 'zzz999zzz']) expect(text).not.toContain(secret);
    expect(out[0]).toMatchObject({
      event: 'test.line',
      nested: { deeper: { url: 'http://valt/api?access_token=***' } },
      err: { type: 'Error' },
    });
  });

  it('masks the fields pino redacts by name, whatever their content', () => {
    const { stream, lines } = capture();
    createLogger('info', new Secrets(), stream).info(
      { event: 'test.line', headers: { authorization: 'Basic dXNlcjpwYXNz' }, login: { password: 'hunter2' } },
      'x',
    );
    expect(lines()[0]).toMatchObject({ headers: { authorization: '***' }, login: { password: '***' } });
  });
});
