/**
 * Talking to a running daemon's local API over real HTTP, and reading its Prometheus text
 * strictly (every sample belongs to a family with # HELP and # TYPE, values are numbers).
 */
import { request } from 'undici';
import type { DaemonProcess } from './daemon-process.js';
import { waitFor } from './daemon-process.js';

export const API_TOKEN = 'local-api-test-token-7c1e';

/** The daemon's `api` section: any free port on loopback, the test token. */
export function apiSection(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { api: { listen: '127.0.0.1:0', token: API_TOKEN, ...extra } };
}

export interface ApiReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: <T = unknown>() => T;
}

export class ApiClient {
  constructor(readonly origin: string) {}

  /** The API of a daemon that logged `api.listening`. */
  static async of(d: DaemonProcess): Promise<ApiClient> {
    const line = await waitFor(() => d.events('api.listening')[0], 15_000, 'the local API listening');
    return new ApiClient(`http://${String(line.host)}:${String(line.port)}`);
  }

  /** `token`: null sends no Authorization header. */
  async call(method: string, path: string, token: string | null = API_TOKEN): Promise<ApiReply> {
    const res = await request(`${this.origin}${path}`, {
      method: method as 'GET',
      headers: token === null ? {} : { authorization: `Bearer ${token}` },
    });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, text, json: <T>() => JSON.parse(text) as T };
  }

  async get<T>(path: string): Promise<T> {
    const r = await this.call('GET', path);
    if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${r.text}`);
    return r.json<T>();
  }
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
const SUFFIXES = ['_bucket', '_sum', '_count', '_total', ''];

/** Parses Prometheus text exposition format 0.0.4; throws on any line that does not fit it. */
export function parsePrometheus(text: string): Sample[] {
  const typed = new Map<string, string>();
  const helped = new Set<string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (meta) {
      if (meta[1] === 'TYPE') typed.set(meta[2]!, meta[3]!);
      else helped.add(meta[2]!);
      continue;
    }
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${line}`);
    const value = parseValue(m[3]!);
    if (value === null) throw new Error(`not a number in: ${line}`);
    const family = SUFFIXES.map((s) => (s && m[1]!.endsWith(s) ? m[1]!.slice(0, -s.length) : m[1]!)).find((f) => typed.has(f));
    if (!family || !helped.has(family)) throw new Error(`sample without # HELP and # TYPE: ${line}`);
    samples.push({ name: m[1]!, labels: Object.fromEntries([...(m[2] ?? '').matchAll(LABEL)].map((l) => [l[1]!, l[2]!])), value });
  }
  return samples;
}

/** A sample value as Prometheus reads it (Go's ParseFloat: NaN and Inf in any case, e.g. prom-client's `Nan`). */
function parseValue(text: string): number | null {
  if (/^nan$/i.test(text)) return NaN;
  const inf = /^([+-]?)inf(inity)?$/i.exec(text);
  if (inf) return inf[1] === '-' ? -Infinity : Infinity;
  const n = Number(text);
  return text.trim() === '' || Number.isNaN(n) ? null : n;
}

/**
 * The value of the one sample with this name and these labels. A sample that is not there is an
 * error, not 0: a test that reads a metric proves that the daemon exposes it.
 */
export function sampleValue(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
  if (found.length === 0) {
    const sameName = samples.filter((s) => s.name === name).map((s) => JSON.stringify(s.labels));
    throw new Error(
      `no sample of ${name} with labels ${JSON.stringify(labels)}` +
        (sameName.length > 0 ? `; ${name} has samples with ${sameName.join(', ')}` : `; the metrics have no ${name} at all`),
    );
  }
  return found[0]!.value;
}
