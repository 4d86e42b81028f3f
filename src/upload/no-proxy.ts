/**
 * Which hosts are reached directly although a proxy is configured: `network.no_proxy`, or the
 * `no_proxy`/`NO_PROXY` environment variable. The matching is curl's (its lib/noproxy.c and the
 * CURLOPT_NOPROXY manual), so a list that works for `curl` on the box works here:
 *
 * - `*` matches every host.
 * - A name matches that host and every host below it, case-insensitively: `corp.example` and
 *   `.corp.example` both match `corp.example` and `api.corp.example`, never `notcorp.example`. A
 *   leading dot (or `*.`) and trailing dots are ignored.
 * - An IP address matches that address; `10.0.0.0/8` or `fd00::/8` (CIDR) matches the network.
 *   Addresses are compared with URLs written with an address; a name is never resolved to be
 *   compared with a network (curl does not either).
 * - IPv6 addresses are written without brackets (`::1`), or in brackets with a port (`[::1]:8080`).
 *
 * One addition to curl: an entry may end in `:port` (`minio.local:9000`, `10.1.2.3:8443`), and then
 * matches that port only (the scheme's default when the URL has none). curl compares host names
 * only, so such an entry never matches there; Go's and Python's no_proxy take ports the same way
 * as here.
 */
import { BlockList, isIP } from 'node:net';

export interface NoProxyRule {
  /** The entry as written, for messages. */
  readonly entry: string;
  /** null: any port. */
  readonly port: number | null;
  matches(host: string, port: number): boolean;
}

const HOST_NAME_RE = /^(?:[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*$/i;

/** One entry of a no_proxy list; throws a message saying what is wrong with it. */
export function parseNoProxyEntry(raw: string): NoProxyRule {
  const entry = raw.trim();
  if (entry === '') throw new Error('empty entry');
  if (entry === '*') return { entry, port: null, matches: () => true };
  const { host, port } = splitPort(entry);
  const cidr = /^(.+)\/(\d{1,3})$/.exec(host);
  const address = cidr ? cidr[1]! : host;
  const family = isIP(address);
  if (family !== 0) {
    const bits = family === 4 ? 32 : 128;
    const prefix = cidr ? Number(cidr[2]) : bits;
    if (prefix > bits) throw new Error(`the network length /${prefix} is more than ${bits} bits`);
    if (cidr && port !== null) throw new Error('a network (CIDR) takes no port');
    const type = family === 4 ? 'ipv4' : 'ipv6';
    const list = new BlockList();
    list.addSubnet(address, prefix, type);
    return {
      entry,
      port,
      matches: (h, p) => isIP(h) === family && (port === null || port === p) && list.check(h, type),
    };
  }
  if (cidr) throw new Error(`${JSON.stringify(address)} is not an IP address, so it takes no /${cidr[2]}`);
  const name = host
    .replace(/^\*?\.+/, '')
    .replace(/\.+$/, '')
    .toLowerCase();
  if (!HOST_NAME_RE.test(name)) {
    throw new Error(`${JSON.stringify(raw)} is not a host name, .domain, IP address or CIDR network (such as 10.0.0.0/8)`);
  }
  return {
    entry,
    port,
    matches: (h, p) => {
      if (port !== null && port !== p) return false;
      const candidate = h.replace(/\.+$/, '').toLowerCase();
      return candidate === name || candidate.endsWith(`.${name}`);
    },
  };
}

/** `name:port`, `1.2.3.4:port`, `[v6]:port` or `[v6]`; a bare IPv6 address has no port. */
function splitPort(entry: string): { host: string; port: number | null } {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
  if (bracketed) {
    if (isIP(bracketed[1]!) !== 6) throw new Error(`${JSON.stringify(entry)}: only an IPv6 address goes in brackets`);
    return { host: bracketed[1]!, port: bracketed[2] === undefined ? null : portNumber(bracketed[2]) };
  }
  // More than one colon: an IPv6 address (with or without /bits), which takes its port in brackets.
  if ((entry.match(/:/g) ?? []).length > 1) return { host: entry, port: null };
  const withPort = /^(.*):(\d*)$/.exec(entry);
  if (!withPort) return { host: entry, port: null };
  if (withPort[2] === '') throw new Error(`${JSON.stringify(entry)}: the port is missing after ":"`);
  return { host: withPort[1]!, port: portNumber(withPort[2]!) };
}

function portNumber(text: string): number {
  const port = Number(text);
  if (port < 1 || port > 65535) throw new Error(`port ${text} is not between 1 and 65535`);
  return port;
}

/** A no_proxy list, parsed once. */
export class NoProxy {
  static readonly none = new NoProxy([]);

  constructor(readonly rules: readonly NoProxyRule[]) {}

  /** Entries that do not parse are thrown, naming the first. */
  static parse(entries: readonly string[]): NoProxy {
    return new NoProxy(entries.map(parseNoProxyEntry));
  }

  /**
   * A comma- or space-separated list as the environment holds it. Entries that do not parse are
   * returned apart (curl skips what it cannot match; the daemon says so in its log).
   */
  static fromEnvironment(value: string): { noProxy: NoProxy; invalid: string[] } {
    const rules: NoProxyRule[] = [];
    const invalid: string[] = [];
    for (const entry of value.split(/[\s,]+/).filter(Boolean)) {
      try {
        rules.push(parseNoProxyEntry(entry));
      } catch {
        invalid.push(entry);
      }
    }
    return { noProxy: new NoProxy(rules), invalid };
  }

  /** Whether `url` (an origin or any absolute URL) is reached without the proxy. */
  bypasses(url: URL): boolean {
    if (this.rules.length === 0) return false;
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
    return this.rules.some((rule) => rule.matches(host, port));
  }

  get entries(): string[] {
    return this.rules.map((r) => r.entry);
  }
}
