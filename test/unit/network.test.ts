/**
 * The `network` section and the environment's proxy variables: which hosts no_proxy sends
 * straight out (curl's rules, plus ports), which proxy each scheme takes from the environment
 * (curl's order), what check-config shows of a proxy with credentials, and a CA file's problems
 * named by their YAML path. The requests themselves are tested through real proxies and HTTPS
 * servers in test/e2e/proxy-tls.test.ts.
 */
import tls from 'node:tls';
import util from 'node:util';
import { describe, expect, it } from 'vitest';
import { describeConfig } from '../../src/config/mask.js';
import type { Config } from '../../src/config/schema.js';
import { NoProxy, parseNoProxyEntry } from '../../src/upload/no-proxy.js';
import { networkSettings } from '../../src/upload/network.js';
import { loadYaml, problemsOf } from '../support/config.js';

const MINIMAL = `
watch: { root: /srv/vms/exports }
targets:
  alo: { type: alo, base_url: https://api.alo.ai/v1, auth: { bearer: t0ken-alo } }
`;

const load = (extra: string, files: Record<string, string> = {}): Config => loadYaml(MINIMAL + extra, { files });

/** Whether `url` goes straight out under `list`. */
const bypasses = (list: string[], url: string): boolean => NoProxy.parse(list).bypasses(new URL(url));

describe('no_proxy matching', () => {
  it('a name matches the host and every host below it, whatever the case, never a longer name', () => {
    for (const entry of ['corp.example', '.corp.example', '*.corp.example', 'CORP.example.']) {
      expect(bypasses([entry], 'https://corp.example/x'), entry).toBe(true);
      expect(bypasses([entry], 'https://api.corp.example/x'), entry).toBe(true);
      expect(bypasses([entry], 'https://a.b.Corp.Example./x'), entry).toBe(true);
      expect(bypasses([entry], 'https://notcorp.example/x'), entry).toBe(false);
      expect(bypasses([entry], 'https://corp.example.org/x'), entry).toBe(false);
    }
    expect(bypasses(['localhost'], 'http://localhost:9000/')).toBe(true);
    expect(bypasses(['localhost'], 'http://127.0.0.1:9000/')).toBe(false);
  });

  it('an address or network matches URLs written with an address in it; names are not resolved', () => {
    expect(bypasses(['10.0.0.0/8'], 'https://10.20.30.40/')).toBe(true);
    expect(bypasses(['10.0.0.0/8'], 'https://11.0.0.1/')).toBe(false);
    expect(bypasses(['192.168.1.7'], 'http://192.168.1.7:8080/')).toBe(true);
    expect(bypasses(['192.168.1.7'], 'http://192.168.1.8/')).toBe(false);
    expect(bypasses(['127.0.0.0/8'], 'http://localhost/')).toBe(false);
    expect(bypasses(['0.0.0.0/0'], 'http://203.0.113.9/')).toBe(true);
    expect(bypasses(['::1'], 'http://[::1]:8080/')).toBe(true);
    expect(bypasses(['fd00::/8'], 'https://[fd12:3456::1]/')).toBe(true);
    expect(bypasses(['fd00::/8'], 'https://[fe80::1]/')).toBe(false);
    // An IPv4 network says nothing of IPv6 addresses and the other way round.
    expect(bypasses(['0.0.0.0/0'], 'http://[::1]/')).toBe(false);
    expect(bypasses(['::/0'], 'http://127.0.0.1/')).toBe(false);
  });

  it('an entry with a port matches that port only, the scheme default when the URL has none', () => {
    expect(bypasses(['minio.local:9000'], 'http://minio.local:9000/b')).toBe(true);
    expect(bypasses(['minio.local:9000'], 'http://minio.local:9001/b')).toBe(false);
    expect(bypasses(['minio.local:443'], 'https://minio.local/b')).toBe(true);
    expect(bypasses(['minio.local:443'], 'http://minio.local/b')).toBe(false);
    expect(bypasses(['10.1.2.3:8443'], 'https://10.1.2.3:8443/')).toBe(true);
    expect(bypasses(['[::1]:8080'], 'http://[::1]:8080/')).toBe(true);
    expect(bypasses(['[::1]:8080'], 'http://[::1]:8081/')).toBe(false);
  });

  it('* matches everything; an empty list nothing', () => {
    expect(bypasses(['*'], 'https://api.alo.ai/v1')).toBe(true);
    expect(bypasses([], 'https://api.alo.ai/v1')).toBe(false);
  });

  it('refuses what is no host, domain, address or network, saying why', () => {
    expect(() => parseNoProxyEntry('10.0.0.0/33')).toThrow('/33 is more than 32 bits');
    expect(() => parseNoProxyEntry('corp.example/8')).toThrow('is not an IP address');
    expect(() => parseNoProxyEntry('10.0.0.0/8:443')).toThrow('takes no port');
    expect(() => parseNoProxyEntry('host:')).toThrow('the port is missing');
    expect(() => parseNoProxyEntry('host:70000')).toThrow('not between 1 and 65535');
    expect(() => parseNoProxyEntry('[corp.example]')).toThrow('only an IPv6 address goes in brackets');
    expect(() => parseNoProxyEntry('http://corp.example')).toThrow('is not a host name');
    expect(() => parseNoProxyEntry('a b')).toThrow('is not a host name');
  });

  it('from the environment: commas and spaces separate entries, what does not parse is set apart', () => {
    const { noProxy, invalid } = NoProxy.fromEnvironment(' localhost, .corp.example ,10.0.0.0/8,,bad/host ');
    expect(noProxy.entries).toEqual(['localhost', '.corp.example', '10.0.0.0/8']);
    expect(invalid).toEqual(['bad/host']);
  });
});

describe('network in the configuration', () => {
  it('is straight out with no section, and takes proxy, no_proxy (a list or one string) and ca_file', () => {
    expect(load('').network).toEqual({});
    const config = load('network:\n  proxy: http://proxy.corp:3128\n  no_proxy: [localhost, .corp.example, 10.0.0.0/8]\n');
    expect(config.network.proxy?.origin).toBe('http://proxy.corp:3128');
    expect(config.network.no_proxy).toEqual(['localhost', '.corp.example', '10.0.0.0/8']);
    expect(load('network: { no_proxy: "localhost, 10.0.0.0/8" }').network.no_proxy).toEqual(['localhost', '10.0.0.0/8']);
  });

  it('names every problem by its YAML path, never quoting the credentials', () => {
    const problems = problemsOf(() =>
      load('network:\n  proxy: "socks5://user:hunter2pass@proxy:1080"\n  no_proxy: [localhost, "10.0.0.0/40", 7]\n  ca_fle: x\n'),
    );
    expect(problems).toEqual([
      'network.proxy: the proxy must be an http:// or https:// URL, not socks5://',
      'network.no_proxy[1]: the network length /40 is more than 32 bits',
      'network.no_proxy[2]: expected a host name, .domain, IP address or network, got a number',
      'network.ca_fle: unknown key (did you mean ca_file?)',
    ]);
    expect(problemsOf(() => load('network: { proxy: "http://u:hunter2pass@proxy.corp:3128/path" }'))).toEqual([
      'network.proxy: the proxy URL takes no path, query or fragment: http://host:port',
    ]);
    expect(problemsOf(() => load('network: { proxy: "http://:hunter2pass@proxy.corp:3128" }')).join()).not.toContain('hunter2pass');
  });

  it('shows a proxy with its credentials masked, in check-config, util.inspect and JSON', () => {
    const config = load('network: { proxy: "http://proxyuser:hunter2pass@proxy.corp:3128" }');
    const out = describeConfig(config);
    expect(out).toContain('proxy: http://***:***@proxy.corp:3128');
    for (const shown of [out, util.inspect(config, { depth: 9 }), JSON.stringify(config)]) {
      expect(shown).not.toContain('hunter2pass');
      expect(shown).not.toContain('proxyuser');
    }
    expect(config.network.proxy?.authorization()).toBe(`Basic ${Buffer.from('proxyuser:hunter2pass').toString('base64')}`);
  });

  describe('ca_file', () => {
    // Any real certificate will do: one of Node's own CAs.
    const certificate = tls.rootCertificates[0]!;

    it('reads the certificates, relative to the configuration file, and prints as its path', () => {
      const config = load('network: { ca_file: corp-ca.pem }', {
        '/etc/vms-uplink/corp-ca.pem': `# Corp CA\n${certificate}\n${certificate}`,
      });
      expect(config.network.ca_file?.file).toBe('/etc/vms-uplink/corp-ca.pem');
      expect(config.network.ca_file?.certificates).toHaveLength(2);
      expect(describeConfig(config)).toContain('ca_file: /etc/vms-uplink/corp-ca.pem');

      // The system's CAs stay trusted: Node's own set, then the file's.
      const settings = networkSettings(config.network, {});
      expect(settings.ca).toEqual([...tls.rootCertificates, ...config.network.ca_file!.certificates]);
      expect(settings.describe()).toContain("trusted CAs: the system's and those in /etc/vms-uplink/corp-ca.pem");
    });

    it('names a missing, foreign or broken file at network.ca_file', () => {
      const broken = certificate.replace(/\n[A-Za-z0-9+/]{20}/, '\n!!!!!!!!!!!!!!!!!!!!');
      expect(problemsOf(() => load('network: { ca_file: /nope.pem }'))).toEqual(['network.ca_file: cannot read /nope.pem (ENOENT)']);
      expect(problemsOf(() => load('network: { ca_file: /k.pem }', { '/k.pem': 'not a certificate' }))[0]).toMatch(
        /^network\.ca_file: \/k\.pem holds no PEM certificate/,
      );
      expect(problemsOf(() => load('network: { ca_file: /b.pem }', { '/b.pem': broken }))).toEqual([
        'network.ca_file: certificate 1 of 1 in /b.pem does not parse',
      ]);
    });
  });
});

describe('proxies from the environment', () => {
  const none = load('').network;
  const route = (env: Record<string, string>, url: string): string | null => {
    const r = networkSettings(none, env).proxyFor(new URL(url));
    return r && `${r.proxy.origin} (${r.source})`;
  };

  it('https:// URLs: https_proxy, then HTTPS_PROXY, then all_proxy, then ALL_PROXY', () => {
    const all = { https_proxy: 'http://a:1', HTTPS_PROXY: 'http://b:2', all_proxy: 'http://c:3', ALL_PROXY: 'http://d:4' };
    expect(route(all, 'https://api.alo.ai/')).toBe('http://a:1 (https_proxy)');
    expect(route({ ...all, https_proxy: '' }, 'https://api.alo.ai/')).toBe('http://b:2 (HTTPS_PROXY)');
    expect(route({ all_proxy: 'http://c:3', ALL_PROXY: 'http://d:4' }, 'https://api.alo.ai/')).toBe('http://c:3 (all_proxy)');
    expect(route({ ALL_PROXY: 'http://d:4' }, 'https://api.alo.ai/')).toBe('http://d:4 (ALL_PROXY)');
    expect(route({ http_proxy: 'http://a:1' }, 'https://api.alo.ai/')).toBeNull();
  });

  it('http:// URLs: http_proxy in lowercase only (curl ignores HTTP_PROXY), then all_proxy; ignoring HTTP_PROXY is said', () => {
    expect(route({ http_proxy: 'http://a:1', HTTP_PROXY: 'http://b:2' }, 'http://valt.local/')).toBe('http://a:1 (http_proxy)');
    expect(route({ HTTP_PROXY: 'http://b:2' }, 'http://valt.local/')).toBeNull();
    expect(route({ HTTP_PROXY: 'http://b:2', ALL_PROXY: 'http://d:4' }, 'http://valt.local/')).toBe('http://d:4 (ALL_PROXY)');
    expect(route({ HTTPS_PROXY: 'http://b:2' }, 'http://valt.local/')).toBeNull();
    expect(networkSettings(none, { HTTP_PROXY: 'http://b:2' }).notes.join()).toContain('HTTP_PROXY is ignored');
  });

  it('a proxy without a scheme is http://; no_proxy, then NO_PROXY, apply', () => {
    expect(route({ HTTPS_PROXY: 'proxy.corp:3128' }, 'https://api.alo.ai/')).toBe('http://proxy.corp:3128 (HTTPS_PROXY)');
    const env = { HTTPS_PROXY: 'http://b:2', no_proxy: 'alo.ai', NO_PROXY: 'other.example' };
    expect(route(env, 'https://api.alo.ai/')).toBeNull();
    expect(route(env, 'https://other.example/')).toBe('http://b:2 (HTTPS_PROXY)');
    expect(route({ HTTPS_PROXY: 'http://b:2', NO_PROXY: '127.0.0.0/8' }, 'https://127.0.0.1:8443/')).toBeNull();
  });

  it('network.proxy replaces the environment; network.no_proxy replaces NO_PROXY', () => {
    const config = load('network:\n  proxy: http://proxy.corp:3128\n  no_proxy: [.corp.example]\n').network;
    const settings = networkSettings(config, { HTTPS_PROXY: 'http://b:2', http_proxy: 'http://a:1', NO_PROXY: 'api.alo.ai' });
    expect(settings.proxyFor(new URL('https://api.alo.ai/'))?.source).toBe('network.proxy');
    expect(settings.proxyFor(new URL('http://valt.local/'))?.source).toBe('network.proxy');
    expect(settings.proxyFor(new URL('https://s3.corp.example/'))).toBeNull();
    expect(settings.describe()).toBe(
      "https:// through the proxy http://proxy.corp:3128 (network.proxy); http:// through the proxy http://proxy.corp:3128 (network.proxy); no proxy for .corp.example (network.no_proxy); trusted CAs: the system's",
    );
  });

  it('refuses a proxy variable that is not a URL, naming the variable and not its credentials', () => {
    expect(problemsOf(() => networkSettings(none, { HTTPS_PROXY: 'ftp://u:hunter2pass@proxy:21' }))).toEqual([
      'HTTPS_PROXY (environment): the proxy must be an http:// or https:// URL, not ftp://',
    ]);
  });

  it('describes credentials from the environment masked', () => {
    const settings = networkSettings(none, { https_proxy: 'http://proxyuser:hunter2pass@proxy.corp:3128' });
    expect(settings.describe()).toContain('https:// through the proxy http://***:***@proxy.corp:3128 (https_proxy)');
    expect(settings.describe()).not.toContain('hunter2pass');
  });
});
