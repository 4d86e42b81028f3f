// The resolved configuration as `check-config` prints it: the YAML's own keys, every default
// filled in, every secret as `***` (credentials, tokens and passwords in URLs alike). Values of
// the configuration's own classes print as their toJSON says: a Secret as `***`, a proxy URL with
// its credentials masked, a CA file as its path.

import { stringify } from 'yaml';
import { redactUrl } from '../log/redact.js';
import { CaBundle, ProxyUrl } from './network.js';
import type { Config } from './schema.js';
import { Secret } from './secret.js';

function plain(value: unknown): unknown {
  if (value instanceof Secret) return '***';
  if (value instanceof ProxyUrl || value instanceof CaBundle) return value.toJSON();
  if (typeof value === 'string') return /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? redactUrl(value) : value;
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
  const header = '# resolved configuration: sizes in bytes, rates in bytes per second (null = unlimited), durations in seconds\n';
  return header + stringify(plain(config), { lineWidth: 0 });
}
