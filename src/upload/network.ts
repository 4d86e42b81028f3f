/**
 * How outgoing requests leave the box: which proxy (if any) each URL goes through, and which CA
 * certificates HTTPS trusts. Built once from the configuration's `network` section and the
 * environment the daemon started with (handed in by the entry point, never read here), and given
 * to the HttpClient when it is made: a configuration reload makes new settings and a new client.
 *
 * Without `network.proxy`, the proxy comes from the environment as curl takes it (libcurl-env(3),
 * lib/url.c), so a box set up for curl behaves the same:
 * - https:// URLs: `https_proxy`, else `HTTPS_PROXY`, else `all_proxy`, else `ALL_PROXY`;
 * - http:// URLs: `http_proxy` (lowercase only), else `all_proxy`, else `ALL_PROXY`. An uppercase
 *   `HTTP_PROXY` is ignored, as curl ignores it: a CGI program gets an `HTTP_PROXY` variable from
 *   any client's `Proxy:` request header ("httpoxy"). The daemon says so in its log at start;
 * - `no_proxy`, else `NO_PROXY` (network.no_proxy replaces both);
 * - a lowercase variable wins over its uppercase form; an empty variable counts as unset; a proxy
 *   without a scheme (`proxy.corp:3128`) is taken as http://.
 * With `network.proxy` set, the environment's proxy variables are ignored.
 */
import fs from 'node:fs';
import tls from 'node:tls';
import { ConfigError, type Env, type ReadFile } from '../config/config-file.js';
import { pemCertificates, ProxyUrl } from '../config/network.js';
import type { NetworkConfig } from '../config/schema.js';
import { NoProxy } from './no-proxy.js';

/** A proxy and where it was configured (`network.proxy`, `HTTPS_PROXY`…), for messages. */
export interface ProxyRoute {
  proxy: ProxyUrl;
  source: string;
}

export type UrlScheme = 'http:' | 'https:';

export class NetworkSettings {
  constructor(
    /** The proxy of each scheme; null: straight out. */
    readonly proxies: Readonly<Record<UrlScheme, ProxyRoute | null>>,
    readonly noProxy: NoProxy,
    /** Where the no_proxy list came from (`network.no_proxy`, `NO_PROXY`…); null when there is none. */
    readonly noProxySource: string | null,
    /** Every CA certificate HTTPS trusts (PEM), Node's own included; null: Node's defaults, untouched. */
    readonly ca: readonly string[] | null,
    /** network.ca_file, for messages. */
    readonly caFile: string | null,
    /** What the daemon says at start about settings it did not take (an ignored HTTP_PROXY…). */
    readonly notes: readonly string[] = [],
  ) {}

  /** Straight out, Node's trusted CAs: what a daemon without settings does. */
  static readonly direct = new NetworkSettings({ 'http:': null, 'https:': null }, NoProxy.none, null, null, null);

  /** The proxy a request to `url` goes through, or null when it goes straight out. */
  proxyFor(url: URL): ProxyRoute | null {
    const route = this.proxies[url.protocol as UrlScheme] ?? null;
    return route && !this.noProxy.bypasses(url) ? route : null;
  }

  /** One line for the log at start and for check-config: where requests go, and what is trusted. Never a credential. */
  describe(): string {
    const way = (scheme: UrlScheme): string => {
      const route = this.proxies[scheme];
      return route ? `${scheme}// through the proxy ${route.proxy.toString()} (${route.source})` : `${scheme}// direct`;
    };
    const parts = [way('https:'), way('http:')];
    if (this.noProxySource) parts.push(`no proxy for ${this.noProxy.entries.join(', ') || 'no host'} (${this.noProxySource})`);
    parts.push(this.caFile ? `trusted CAs: the system's and those in ${this.caFile}` : `trusted CAs: the system's`);
    return parts.join('; ');
  }
}

export interface NetworkSettingsOptions {
  /** Names the configuration in a ConfigError. */
  source?: string;
  /** Reads NODE_EXTRA_CA_CERTS' file. Default fs.readFileSync. */
  readFile?: ReadFile;
}

/**
 * The settings of `network` with the environment's proxy variables where the configuration has
 * none. Throws a ConfigError for a proxy variable that is not a URL.
 */
export function networkSettings(config: NetworkConfig, env: Env, options: NetworkSettingsOptions = {}): NetworkSettings {
  const problems: string[] = [];
  const notes: string[] = [];
  const fromEnv = (names: string[]): ProxyRoute | null => {
    for (const name of names) {
      const value = env[name]?.trim();
      if (!value) continue;
      try {
        return { proxy: ProxyUrl.parse(value), source: name };
      } catch (err) {
        problems.push(`${name} (environment): ${(err as Error).message}`);
        return null;
      }
    }
    return null;
  };
  let proxies: Record<UrlScheme, ProxyRoute | null>;
  if (config.proxy) {
    const route = { proxy: config.proxy, source: 'network.proxy' };
    proxies = { 'http:': route, 'https:': route };
  } else {
    proxies = {
      'https:': fromEnv(['https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY']),
      'http:': fromEnv(['http_proxy', 'all_proxy', 'ALL_PROXY']),
    };
    if (env['HTTP_PROXY']?.trim() && !env['http_proxy']?.trim()) {
      notes.push(
        'HTTP_PROXY is ignored, as curl ignores it (a CGI request can set it); set http_proxy, or network.proxy, for http:// URLs to use a proxy',
      );
    }
  }
  if (problems.length > 0) throw new ConfigError(options.source ?? 'environment', problems);

  let noProxy = NoProxy.none;
  let noProxySource: string | null = null;
  if (config.no_proxy) {
    noProxy = NoProxy.parse(config.no_proxy);
    noProxySource = 'network.no_proxy';
  } else if (proxies['http:'] || proxies['https:']) {
    const name = ['no_proxy', 'NO_PROXY'].find((n) => env[n]?.trim());
    if (name) {
      const parsed = NoProxy.fromEnvironment(env[name]!);
      noProxy = parsed.noProxy;
      noProxySource = name;
      if (parsed.invalid.length > 0)
        notes.push(`${name}: ignored what is no host name, domain, address or network: ${parsed.invalid.join(', ')}`);
    }
  }

  let ca: string[] | null = null;
  if (config.ca_file) {
    // Node's CA option replaces its default set: that set is given again, with NODE_EXTRA_CA_CERTS'
    // certificates (which Node adds to its defaults only), then the configured ones.
    ca = [...tls.rootCertificates, ...extraCaCertificates(env, options.readFile ?? fs.readFileSync, notes), ...config.ca_file.certificates];
  }
  return new NetworkSettings(proxies, noProxy, noProxySource, ca, config.ca_file?.file ?? null, notes);
}

function extraCaCertificates(env: Env, readFile: ReadFile, notes: string[]): string[] {
  const file = env['NODE_EXTRA_CA_CERTS'];
  if (!file) return [];
  try {
    return pemCertificates(readFile(file, 'utf8').toString());
  } catch (err) {
    notes.push(
      `NODE_EXTRA_CA_CERTS: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)}); its certificates are not trusted`,
    );
    return [];
  }
}
