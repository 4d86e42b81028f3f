// The resolved configuration as `check-config` prints it: every secret as `***`.

import { stringify } from 'yaml';
import { Secret } from './secret.js';
import type { Config } from './schema.js';

// Query parameters that carry credentials in URLs (Valt's access_token, S3 presigned signatures,
// API keys). Matched case-insensitively.
const SECRET_QUERY_NAMES = new Set([
  'token',
  'access_token',
  'refresh_token',
  'id_token',
  'key',
  'api_key',
  'apikey',
  'signature',
  'sig',
  'x-amz-signature',
  'x-amz-security-token',
  'x-amz-credential',
  'password',
  'secret',
  'client_secret',
]);

/** A URL with its credential-bearing query values and userinfo password replaced by `***`. */
export function maskUrl(url: string): string {
  // Rewritten textually, not through URL.toString(), so that nothing else about the URL changes.
  return url
    .replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#:@]*):[^/?#@]*@/i, '$1:***@')
    .replace(/([?&])([^=&#]+)=([^&#]*)/g, (whole, sep: string, name: string) => {
      let decoded = name;
      try {
        decoded = decodeURIComponent(name);
      } catch {
        // keep the raw name
      }
      return SECRET_QUERY_NAMES.has(decoded.toLowerCase()) ? `${sep}${name}=***` : whole;
    });
}

function plain(value: unknown): unknown {
  if (value instanceof Secret) return '***';
  if (typeof value === 'string') return /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? maskUrl(value) : value;
  if (Array.isArray(value)) return value.map(plain);
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = plain(v);
    return out;
  }
  return value;
}

/** YAML for `vms-uplink check-config`: sizes in bytes, rates in bytes/s, durations in seconds. */
export function describeConfig(config: Config): string {
  const masked = plain(config) as Record<string, unknown>;
  // A login body is a secret as a whole, even the fields that look harmless (user names).
  for (const target of Object.values((masked.targets ?? {}) as Record<string, { auth?: Record<string, unknown> }>)) {
    if (target.auth?.kind === 'login') target.auth.body = '***';
  }
  const header = '# resolved configuration: sizes in bytes, rates in bytes per second (null = unlimited), durations in seconds\n';
  return header + stringify(masked, { lineWidth: 0 });
}
