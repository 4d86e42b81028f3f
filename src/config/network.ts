// The values of the `network` section (schema.ts): a proxy URL whose credentials are secrets,
// a no_proxy list, and a file of extra trusted CA certificates. Each is checked here when the
// configuration is loaded, so `check-config` names a bad one by its YAML path.

import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import util from 'node:util';
import { parseNoProxyEntry } from '../upload/no-proxy.js';
import { describeInput, fail, text, type Parser } from './fields.js';
import type { ReadFile } from './config-file.js';
import { Secret } from './secret.js';

/**
 * A forward proxy: `http://proxy.corp:3128`, optionally `http://user:password@proxy.corp:3128`.
 * The user name and password are secrets: the value prints (check-config, logs, util.inspect) as
 * `http://***:***@proxy.corp:3128`; `origin` names the proxy in messages without them.
 */
export class ProxyUrl {
  /** `http://proxy.corp:3128`: scheme, host and port, never credentials. */
  readonly origin: string;
  readonly username: Secret | null;
  readonly password: Secret | null;

  constructor(url: URL) {
    this.origin = url.origin;
    this.username = url.username ? new Secret(decodeURIComponent(url.username)) : null;
    this.password = url.password ? new Secret(decodeURIComponent(url.password)) : null;
  }

  /** The proxy URL as the YAML or the environment gave it; throws a message without the credentials. */
  static parse(value: string): ProxyUrl {
    const trimmed = value.trim();
    // curl takes a proxy without a scheme as http://.
    const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) ? trimmed : `http://${trimmed}`;
    let url: URL;
    try {
      url = new URL(withScheme);
    } catch {
      // The URL's own message would quote it, credentials and all.
      return fail('not a valid URL (expected http://host:port, optionally http://user:password@host:port)');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      fail(`the proxy must be an http:// or https:// URL, not ${url.protocol}//`);
    }
    if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) {
      fail('the proxy URL takes no path, query or fragment: http://host:port');
    }
    if (url.password && !url.username) fail('the proxy URL has a password without a user name');
    return new ProxyUrl(url);
  }

  get hasCredentials(): boolean {
    return this.username !== null;
  }

  /** The `Proxy-Authorization` header value, or null without credentials. */
  authorization(): string | null {
    if (!this.username) return null;
    return `Basic ${Buffer.from(`${this.username.reveal()}:${this.password?.reveal() ?? ''}`).toString('base64')}`;
  }

  /** The proxy as messages show it: credentials masked. */
  toString(): string {
    if (!this.username) return this.origin;
    const [scheme, rest] = this.origin.split('://') as [string, string];
    return `${scheme}://***${this.password ? ':***' : ''}@${rest}`;
  }

  toJSON(): string {
    return this.toString();
  }

  [util.inspect.custom](): string {
    return `ProxyUrl(${this.toString()})`;
  }
}

/**
 * `network.ca_file`: PEM certificates trusted for every HTTPS connection besides the system's.
 * Read and checked once, when the configuration is loaded; prints as the file's path.
 */
export class CaBundle {
  constructor(
    readonly file: string,
    /** Each certificate in PEM form. */
    readonly certificates: readonly string[],
  ) {}

  toJSON(): string {
    return this.file;
  }
}

/** The PEM certificates in a text (a CA bundle may hold comments and other blocks between them). */
export function pemCertificates(content: string): string[] {
  return content.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

/** Parser of `network.ca_file`: the absolute path of a readable file of PEM certificates. */
export function caFile(baseDir: string | undefined, readFile: ReadFile = fs.readFileSync): Parser<CaBundle> {
  return (v) => {
    const file = path.resolve(baseDir ?? process.cwd(), text(v));
    let content: string;
    try {
      content = readFile(file, 'utf8').toString();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return fail(`cannot read ${file}${code ? ` (${code})` : ''}`);
    }
    const certificates = pemCertificates(content);
    if (certificates.length === 0) {
      fail(
        `${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----); convert a DER file with: openssl x509 -inform der -in FILE -out FILE.pem`,
      );
    }
    certificates.forEach((pem, i) => {
      try {
        new X509Certificate(pem);
      } catch {
        fail(`certificate ${i + 1} of ${certificates.length} in ${file} does not parse`);
      }
    });
    return new CaBundle(file, certificates);
  };
}

/** Parser of `network.proxy`. */
export function proxyUrl(v: unknown): ProxyUrl {
  return ProxyUrl.parse(text(v));
}

/** One entry of `network.no_proxy` (see src/upload/no-proxy.ts for what matches what). */
export function noProxyEntry(v: unknown): string {
  if (typeof v !== 'string') return fail(`expected a host name, .domain, IP address or network, got ${describeInput(v)}`);
  return parseNoProxyEntry(v).entry;
}

/** `network.no_proxy` written as one comma-separated string, as NO_PROXY holds it. */
export function noProxyText(v: unknown): string[] {
  return text(v)
    .split(/[\s,]+/)
    .filter(Boolean)
    .map((entry, i) => {
      try {
        return noProxyEntry(entry);
      } catch (err) {
        return fail(`entry ${i + 1}: ${(err as Error).message}`);
      }
    });
}
