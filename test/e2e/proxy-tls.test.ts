/**
 * Proxies and TLS through the real daemon: a real forward proxy (Debian's tinyproxy, on loopback,
 * test/support/tinyproxy.ts) and emulators and an S3 store that serve HTTPS with a CA made by
 * `openssl` while the test runs (test/support/test-ca.ts).
 *
 * What is asserted is what the operator and the platform get: the SHA-256 of what the store holds,
 * the ledger's rows (nothing failed), `status` and `/healthz`; and, for where requests went, the
 * proxy's own log counted against what the servers received: through a CONNECT tunnel the proxy
 * sees one request per connection, so its CONNECT lines for a server's port must equal the TCP
 * connections that server accepted (a request sent around the proxy would make one more); an
 * absolute-form request is one line per request, so the lines for a server equal its requests.
 */
import type http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CaBundle, ProxyUrl } from '../../src/config/network.js';
import { Secrets } from '../../src/log/redact.js';
import { HttpClient } from '../../src/upload/http.js';
import { NetworkHealth } from '../../src/upload/network-health.js';
import { networkSettings } from '../../src/upload/network.js';
import { AION_TEST_KEY, startAionvisionEmulator } from '../emulators/aionvision.js';
import { startAloEmulator, type AloEmulator } from '../emulators/alo.js';
import { createServer, listen } from '../emulators/listen.js';
import { startS3Store, type S3Store } from '../emulators/s3-store.js';
import { aloTargetConfig, waitIncident, type AloSite } from '../support/alo-site.js';
import { runCli, waitFor, type DaemonProcess } from '../support/daemon-process.js';
import { MiB } from '../support/files.js';
import { harness, type Harness } from '../support/harness.js';
import { ledgerRows } from '../support/ledger.js';
import { ApiClient, apiSection } from '../support/local-api.js';
import { exportVideos, writeOneVideoIncident } from '../support/manifest.js';
import { writeSiteConfig } from '../support/site.js';
import { createTestCa, type TestCa } from '../support/test-ca.js';
import { freePort, Tinyproxy, type ProxiedRequest, type TinyproxyOptions } from '../support/tinyproxy.js';

/** The proxy's BasicAuth; the password must never show in a log line, status or check-config. */
const AUTH = { user: 'uplink-proxy-user', password: 'Pr0xy-pa55word-7f3a' };

let ca: TestCa;
beforeAll(async () => {
  ca = await createTestCa();
});
afterAll(async () => {
  await ca?.close();
});

const portOf = (origin: string): string => new URL(origin).port;
const hostOf = (origin: string): string => `127.0.0.1:${portOf(origin)}`;

async function proxy(h: Harness, options: TinyproxyOptions = {}): Promise<Tinyproxy> {
  return h.closeAtEnd(await Tinyproxy.start(options));
}

/** An ALO site (emulator and store) serving HTTPS with the test CA; `network` becomes the config's section. */
function httpsSite(h: Harness, network: Record<string, unknown>, sections: Record<string, unknown> = {}): Promise<AloSite> {
  return h.site({ store: { tls: ca.server }, emulator: { tls: ca.server }, sections: { network, ...sections } });
}

/** The CONNECT lines of the proxy's log per `host:port`; fails on any other kind of request. */
function tunnelsByHost(requests: ProxiedRequest[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of requests) {
    expect(r.method, `${r.method} ${r.target} went through the proxy without a tunnel`).toBe('CONNECT');
    counts.set(r.target, (counts.get(r.target) ?? 0) + 1);
  }
  return counts;
}

/** Waits until the daemon has stopped, so that no connection is still being opened while the logs are counted. */
async function stopDaemon(d: DaemonProcess): Promise<void> {
  d.kill('SIGTERM');
  expect((await d.exited).code).toBe(0);
}

/** Rows of uploads and videos that failed: none, whatever the network did. */
function failedRows(ledgerPath: string): unknown[] {
  return [
    ...ledgerRows(ledgerPath, `SELECT id, target, last_error FROM uploads WHERE state = 'failed'`),
    ...ledgerRows(ledgerPath, `SELECT incident_id, id FROM videos WHERE state = 'failed'`),
  ];
}

const statusText = async (configPath: string): Promise<string> => {
  const r = await runCli(['status', '--config', configPath]);
  expect(r.code).toBe(0);
  return r.stdout;
};

/** `status` once it shows a PROBLEM line of this kind (the daemon writes it at its next turn). */
const statusShowing = (configPath: string, kind: 'proxy' | 'tls'): Promise<string> =>
  waitFor(
    async () => {
      const text = await statusText(configPath);
      return text.includes(`PROBLEM (${kind}`) && text;
    },
    15_000,
    `status naming the ${kind} problem`,
  );

/** The ALO incident's video uploaded with the file's content. */
async function uploadedIntact(s: { alo: AloEmulator; store: S3Store }, d: DaemonProcess, id: string, sha: string): Promise<void> {
  const incident = await waitIncident(s, d, id, (i) => i.uploaded_videos.length === 1, `ALO holding ${id}`, 45_000);
  expect(await s.store.objectSha256(incident.uploaded_videos[0]!.s3_key)).toBe(sha);
}

describe('through a forward proxy, over HTTPS with network.ca_file', () => {
  it('runs the whole flow to ALO and Aionvision through CONNECT tunnels only, the bytes arriving intact', async (ctx) => {
    const h = harness(ctx);
    const tinyproxy = await proxy(h, { auth: AUTH });
    const store = h.closeAtEnd(await startS3Store({ tls: ca.server }));
    const alo = h.closeAtEnd(await startAloEmulator({ store, tls: ca.server }));
    const aion = h.closeAtEnd(await startAionvisionEmulator({ store, chunkSizeBytes: 5 * MiB, tls: ca.server }));
    expect(alo.baseUrl).toMatch(/^https:\/\/127\.0\.0\.1:/);
    const files = await writeSiteConfig(await h.dir(), {
      targets: {
        alo: aloTargetConfig(alo.baseUrl),
        aion: { type: 'aionvision', base_url: aion.baseUrl, auth: { bearer: AION_TEST_KEY } },
      },
      sections: { network: { proxy: tinyproxy.url(AUTH), ca_file: ca.caFile } },
    });
    const d = h.daemon(files);
    const videos = await exportVideos(files.exportsRoot, { id: 'inc-https', title: 'Over HTTPS' }, [12 * MiB, 1 * MiB]);

    const incident = await waitIncident({ alo }, d, 'inc-https', (i) => i.uploaded_videos.length === 2, 'ALO holding both videos', 45_000);
    for (const v of videos) {
      const uploaded = incident.uploaded_videos.find((u) => u.id === v.id)!;
      expect(await store.objectSha256(uploaded.s3_key), `${v.id} on ALO`).toBe(v.sha256);
      const media = await waitFor(
        () => [...aion.uploads.values()].find((u) => u.filename === v.file && u.status === 'completed'),
        45_000,
        `Aionvision completing ${v.file}`,
      );
      expect(await store.objectSha256(media.s3Key), `${v.id} on Aionvision`).toBe(v.sha256);
    }
    expect(failedRows(files.ledgerPath)).toEqual([]);
    await stopDaemon(d);

    // Every connection each server accepted came through a tunnel of the proxy, and nothing else did.
    const tunnels = tunnelsByHost(await tinyproxy.requests());
    const servers = [
      { name: 'ALO', origin: alo.baseUrl, connections: alo.connections, requests: alo.calls.length },
      { name: 'Aionvision', origin: aion.baseUrl, connections: aion.connections, requests: aion.calls.length },
      { name: 'S3', origin: store.origin, connections: store.connections, requests: store.requests.length },
    ];
    for (const s of servers) {
      expect(s.connections, `${s.name} reached`).toBeGreaterThan(0);
      expect(tunnels.get(hostOf(s.origin)) ?? 0, `tunnels to ${s.name} against the connections it accepted`).toBe(s.connections);
    }
    expect([...tunnels.keys()].sort()).toEqual(servers.map((s) => hostOf(s.origin)).sort());
    expect(await tinyproxy.connectionsOpened()).toBe(servers.reduce((n, s) => n + s.connections, 0));
    console.log(
      `proxy log: ${[...tunnels.values()].reduce((a, b) => a + b, 0)} CONNECT lines, ${await tinyproxy.connectionsOpened()} connections opened; ` +
        servers
          .map((s) => `${s.name}: ${tunnels.get(hostOf(s.origin))} tunnels = ${s.connections} connections accepted, ${s.requests} requests`)
          .join('; '),
    );

    // The proxy's credentials are nowhere in what the daemon printed, nor in status or check-config.
    const checked = await runCli(['check-config', '--config', files.configPath]);
    expect(checked.code).toBe(0);
    expect(checked.stdout).toContain(`proxy: http://***:***@127.0.0.1:${tinyproxy.port}`);
    expect(checked.stdout).toContain(`# network: https:// through the proxy http://***:***@127.0.0.1:${tinyproxy.port} (network.proxy)`);
    expect(checked.stdout).toContain(`ca_file: ${ca.caFile}`);
    for (const shown of [d.output(), checked.stdout, checked.stderr, await statusText(files.configPath)]) {
      expect(shown).not.toContain(AUTH.password);
      expect(shown).not.toContain(AUTH.user);
      expect(shown).not.toContain(Buffer.from(`${AUTH.user}:${AUTH.password}`).toString('base64'));
    }
  }, 120_000);

  it('sends http:// URLs as absolute-form requests, one proxy log line per request the servers received', async (ctx) => {
    const h = harness(ctx);
    const tinyproxy = await proxy(h, { auth: AUTH });
    const s = await h.site({ sections: { network: { proxy: tinyproxy.url(AUTH) } } });
    const d = h.daemon(s);
    const sha = await writeOneVideoIncident(s.exportsRoot, 'inc-plain', 12 * MiB);
    await uploadedIntact(s, d, 'inc-plain', sha);
    await stopDaemon(d);

    const requests = await tinyproxy.requests();
    const toAlo = requests.filter((r) => r.target.startsWith(`${s.alo.baseUrl}/`));
    const toStore = requests.filter((r) => r.target.startsWith(`${s.store.origin}/`));
    expect(toAlo.length + toStore.length, 'every request names its absolute URL').toBe(requests.length);
    expect(requests.some((r) => r.method === 'CONNECT')).toBe(false);
    expect(toAlo.length).toBe(s.alo.calls.length);
    expect(toStore.length).toBe(s.store.requests.length);
    const methods = (list: Array<{ method: string }>): string[] => list.map((r) => r.method).sort();
    expect(methods(toAlo)).toEqual(methods(s.alo.calls));
    expect(methods(toStore)).toEqual(methods(s.store.requests));
    expect(toStore.filter((r) => r.method === 'PUT').length).toBe(3);
    console.log(
      `absolute-form: proxy log ${requests.length} requests = ALO ${s.alo.calls.length} + S3 ${s.store.requests.length} received`,
    );
  });
});

describe('no_proxy', () => {
  it('sends hosts in a listed network (CIDR) straight out: nothing in the proxy log', async (ctx) => {
    const h = harness(ctx);
    const tinyproxy = await proxy(h);
    const s = await httpsSite(h, { proxy: tinyproxy.url(), no_proxy: ['10.0.0.0/8', '127.0.0.0/8'], ca_file: ca.caFile });
    const d = h.daemon(s);
    const sha = await writeOneVideoIncident(s.exportsRoot, 'inc-cidr', 6 * MiB);
    await uploadedIntact(s, d, 'inc-cidr', sha);
    await stopDaemon(d);
    expect(await tinyproxy.requests()).toEqual([]);
    expect(s.alo.connections).toBeGreaterThan(0);
    expect(s.store.connections).toBeGreaterThan(0);
  });

  it('matches a host by name, and only the hosts it names: ALO as localhost goes straight out, the store through the proxy', async (ctx) => {
    const h = harness(ctx);
    const tinyproxy = await proxy(h);
    const s = await h.site({
      store: { tls: ca.server },
      emulator: { tls: ca.server },
      sections: { network: { proxy: tinyproxy.url(), no_proxy: 'localhost', ca_file: ca.caFile } },
    });
    // The same emulator, named so that no_proxy's name matches it (the certificate holds DNS:localhost).
    await writeSiteConfig(s.dir, {
      targets: { alo: aloTargetConfig(s.alo.baseUrl.replace('127.0.0.1', 'localhost')) },
      sections: { network: { proxy: tinyproxy.url(), no_proxy: 'localhost', ca_file: ca.caFile } },
    });
    const d = h.daemon(s);
    const sha = await writeOneVideoIncident(s.exportsRoot, 'inc-name', 6 * MiB);
    await uploadedIntact(s, d, 'inc-name', sha);
    await stopDaemon(d);

    const tunnels = tunnelsByHost(await tinyproxy.requests());
    expect([...tunnels.keys()]).toEqual([hostOf(s.store.origin)]);
    expect(tunnels.get(hostOf(s.store.origin))).toBe(s.store.connections);
    expect(s.alo.connections, 'ALO reached directly').toBeGreaterThan(0);
  });
});

describe('proxy from the environment', () => {
  it('honours HTTPS_PROXY (with credentials) when network.proxy is absent', async (ctx) => {
    const h = harness(ctx);
    const tinyproxy = await proxy(h, { auth: AUTH });
    const s = await httpsSite(h, { ca_file: ca.caFile });
    const d = h.daemon(s, { HTTPS_PROXY: tinyproxy.url(AUTH) });
    const sha = await writeOneVideoIncident(s.exportsRoot, 'inc-env', 6 * MiB);
    await uploadedIntact(s, d, 'inc-env', sha);
    await stopDaemon(d);

    expect(d.events('network.settings')[0]?.msg).toContain(
      `https:// through the proxy http://***:***@127.0.0.1:${tinyproxy.port} (HTTPS_PROXY)`,
    );
    const tunnels = tunnelsByHost(await tinyproxy.requests());
    expect(tunnels.get(hostOf(s.alo.baseUrl))).toBe(s.alo.connections);
    expect(tunnels.get(hostOf(s.store.origin))).toBe(s.store.connections);
    expect(d.output()).not.toContain(AUTH.password);
  });
});

describe('a proxy that refuses or is down', () => {
  it('names a 407 in the log and status, waits without failing anything, and completes once the proxy lets it through', async (ctx) => {
    const h = harness(ctx);
    const refusing = await proxy(h, { auth: AUTH });
    const s = await httpsSite(h, { proxy: refusing.url(), ca_file: ca.caFile });
    const d = h.daemon(s);
    const sha = await writeOneVideoIncident(s.exportsRoot, 'inc-407', 6 * MiB);

    const problem = await waitFor(() => d.events('network.problem')[0], 20_000, 'the refusal logged');
    expect(problem).toMatchObject({ level: 'error', kind: 'proxy', host: hostOf(s.alo.baseUrl) });
    expect(problem.msg).toBe(
      `proxy http://127.0.0.1:${refusing.port} refused CONNECT to ${hostOf(s.alo.baseUrl)}: 407 Proxy Authentication Required ` +
        '(the proxy wants a user name and password, and network.proxy gives none)',
    );
    const status = await statusShowing(s.configPath, 'proxy');
    expect(status).toMatch(
      /PROBLEM \(proxy, since [^)]+\): proxy http:\/\/127\.0\.0\.1:\d+ refused CONNECT to 127\.0\.0\.1:\d+: 407 Proxy Authentication Required/,
    );
    // It keeps trying (each try is a request in the proxy's log), and nothing is given up meanwhile.
    await waitFor(async () => (await refusing.requests()).length >= 5, 20_000, 'tries repeated');
    expect(failedRows(s.ledgerPath)).toEqual([]);
    expect(s.alo.incident('inc-407')).toBeUndefined();

    // The proxy's administrator lets the box through: restarted on its port without authentication.
    await refusing.stop();
    await proxy(h, { port: refusing.port });
    await uploadedIntact(s, d, 'inc-407', sha);
    await waitFor(() => d.events('network.recovered').length > 0, 10_000, 'the recovery logged');
    await waitFor(async () => !(await statusText(s.configPath)).includes('PROBLEM'), 15_000, 'status without a problem');
    expect(failedRows(s.ledgerPath)).toEqual([]);
  });

  it('names credentials the proxy refuses without showing them, and completes once the proxy takes them', async (ctx) => {
    const h = harness(ctx);
    const wrong = { user: AUTH.user, password: 'Not-the-pr0xy-password' };
    const refusing = await proxy(h, { auth: AUTH });
    const s = await httpsSite(h, { proxy: refusing.url(wrong), ca_file: ca.caFile });
    const d = h.daemon(s);
    const sha = await writeOneVideoIncident(s.exportsRoot, 'inc-creds', 6 * MiB);

    const problem = await waitFor(() => d.events('network.problem')[0], 20_000, 'the refusal logged');
    // tinyproxy answers credentials it does not know with 401 (407 is for none at all).
    expect(problem.msg).toBe(
      `proxy http://127.0.0.1:${refusing.port} refused CONNECT to ${hostOf(s.alo.baseUrl)}: 401 Unauthorized ` +
        '(the user name or password in network.proxy is not accepted)',
    );
    const status = await statusShowing(s.configPath, 'proxy');
    await waitFor(async () => (await refusing.requests()).length >= 5, 20_000, 'tries repeated');
    expect(failedRows(s.ledgerPath)).toEqual([]);

    // The proxy's administrator adds the box's account: restarted on its port, it takes those credentials.
    await refusing.stop();
    const fixed = await proxy(h, { auth: wrong, port: refusing.port });
    await uploadedIntact(s, d, 'inc-creds', sha);
    await stopDaemon(d);
    expect(failedRows(s.ledgerPath)).toEqual([]);
    const tunnels = tunnelsByHost(await fixed.requests());
    expect(tunnels.get(hostOf(s.alo.baseUrl))).toBe(s.alo.connections);
    for (const shown of [d.output(), status]) {
      expect(shown).not.toContain(wrong.password);
      expect(shown).not.toContain(AUTH.password);
      expect(shown).not.toContain(wrong.user);
    }
  });

  it('names a proxy that refuses connections, waits, and completes when it comes up, nothing sent around it', async (ctx) => {
    const h = harness(ctx);
    const port = await freePort();
    const s = await httpsSite(h, { proxy: `http://127.0.0.1:${port}`, ca_file: ca.caFile });
    const d = h.daemon(s);
    const sha = await writeOneVideoIncident(s.exportsRoot, 'inc-down', 6 * MiB);

    const problem = await waitFor(() => d.events('network.problem')[0], 20_000, 'the unreachable proxy logged');
    expect(problem.msg).toBe(`proxy http://127.0.0.1:${port} (network.proxy) cannot be reached for ${hostOf(s.alo.baseUrl)}: ECONNREFUSED`);
    const status = await statusShowing(s.configPath, 'proxy');
    expect(status).toContain(`cannot be reached for ${hostOf(s.alo.baseUrl)}: ECONNREFUSED`);
    await waitFor(() => d.events('upload.retry').length >= 3, 20_000, 'tries repeated');
    expect(failedRows(s.ledgerPath)).toEqual([]);
    expect(s.alo.connections + s.store.connections, 'nothing reached the servers around the proxy').toBe(0);

    const tinyproxy = await proxy(h, { port });
    await uploadedIntact(s, d, 'inc-down', sha);
    await stopDaemon(d);
    const tunnels = tunnelsByHost(await tinyproxy.requests());
    expect(tunnels.get(hostOf(s.alo.baseUrl))).toBe(s.alo.connections);
    expect(tunnels.get(hostOf(s.store.origin))).toBe(s.store.connections);
    expect(failedRows(s.ledgerPath)).toEqual([]);
  });
});

describe('refusals classified where they arise (the HttpClient, in process)', () => {
  it('names the proxy, the host and the status of each refusal, records it for status, and clears it when the host answers', async (ctx) => {
    const h = harness(ctx);
    const answering =
      (scheme: string): http.RequestListener =>
      (_req, res) =>
        res.end(`${scheme} ok`);
    const httpsServer = createServer(answering('https'), ca.server);
    const httpServer = createServer(answering('http'));
    const httpsOrigin = await listen(httpsServer, '127.0.0.1', 0);
    const httpOrigin = await listen(httpServer, '127.0.0.1', 0);
    ctx.onTestFinished(() => {
      for (const server of [httpsServer, httpServer]) {
        server.closeAllConnections();
        server.close();
      }
    });
    const config = (proxyUrl: string) =>
      networkSettings({ proxy: ProxyUrl.parse(proxyUrl), ca_file: new CaBundle(ca.caFile, [ca.caPem]) }, {});
    const client = (proxyUrl: string, health: NetworkHealth): HttpClient => {
      const c = new HttpClient({ connectionsPerOrigin: 2, network: config(proxyUrl), health }, new Secrets());
      ctx.onTestFinished(() => c.close());
      return c;
    };
    const get = (c: HttpClient, url: string) => c.request({ method: 'GET', url, timeoutMs: 10_000 });

    // A proxy that wants credentials, asked without: 407, over a tunnel and as an absolute-form request.
    const authProxy = await proxy(h, { auth: AUTH });
    const health = new NetworkHealth(null);
    const bare = client(authProxy.origin, health);
    const proxyName = `proxy http://127.0.0.1:${authProxy.port}`;
    await expect(get(bare, `${httpsOrigin}/x`)).rejects.toMatchObject({
      kind: 'retryable',
      details: { reason: 'proxy_refused' },
      message: `GET ${httpsOrigin}/x: ${proxyName} refused CONNECT to ${hostOf(httpsOrigin)}: 407 Proxy Authentication Required (the proxy wants a user name and password, and network.proxy gives none)`,
    });
    await expect(get(bare, `${httpOrigin}/y`)).rejects.toMatchObject({
      kind: 'retryable',
      message: `GET ${httpOrigin}/y: ${proxyName} refused the request to ${hostOf(httpOrigin)}: 407 Proxy Authentication Required (the proxy wants a user name and password, and network.proxy gives none)`,
    });
    expect(health.problems.map((p) => [p.kind, p.host])).toEqual([
      ['proxy', hostOf(httpsOrigin)],
      ['proxy', hostOf(httpOrigin)],
    ]);
    // With the credentials both go through, and what was recorded for each host is over.
    const withCredentials = client(authProxy.url(AUTH), health);
    expect((await get(withCredentials, `${httpsOrigin}/x`)).text).toBe('https ok');
    expect((await get(withCredentials, `${httpOrigin}/y`)).text).toBe('http ok');
    expect(health.problems).toEqual([]);
    expect(await authProxy.requests()).toEqual([
      { method: 'CONNECT', target: hostOf(httpsOrigin) },
      { method: 'GET', target: `${httpOrigin}/y` },
      { method: 'CONNECT', target: hostOf(httpsOrigin) },
      { method: 'GET', target: `${httpOrigin}/y` },
    ]);

    // A proxy that tunnels to port 443 only: 403 on CONNECT.
    const strictProxy = await proxy(h, { connectPorts: [443] });
    await expect(get(client(strictProxy.origin, health), `${httpsOrigin}/x`)).rejects.toMatchObject({
      kind: 'retryable',
      message: expect.stringContaining(
        `proxy http://127.0.0.1:${strictProxy.port} refused CONNECT to ${hostOf(httpsOrigin)}: 403 Forbidden (the proxy does not allow this host or port)`,
      ),
    });
  });
});

describe('a TLS certificate the box does not trust', () => {
  it('is a configuration problem naming the host in the log, status and /healthz, tried at the longest backoff, and nothing is lost', async (ctx) => {
    const h = harness(ctx);
    const RETRY_MAX_S = 2;
    const s = await h.site({
      store: { tls: ca.server },
      emulator: { tls: ca.server },
      upload: { retry_max: RETRY_MAX_S },
      sections: apiSection({ listen: 0 }),
    });
    const d = h.daemon(s);
    const api = await ApiClient.of(d);
    const sha = await writeOneVideoIncident(s.exportsRoot, 'inc-tls', 6 * MiB);
    const host = hostOf(s.alo.baseUrl);

    // The export settles first; a loaded machine running the rest of this file beside it takes its time.
    const problem = await waitFor(() => d.events('network.problem')[0], 45_000, 'the certificate problem logged');
    expect(problem).toMatchObject({ level: 'error', kind: 'tls', host });
    expect(problem.msg).toBe(
      `TLS certificate of ${host} not accepted: UNABLE_TO_VERIFY_LEAF_SIGNATURE (unable to verify the first certificate); ` +
        'it is not issued by a CA this box trusts: if the network inspects TLS (a corporate proxy), put that CA in network.ca_file',
    );
    const health = await api.call('GET', '/healthz', null);
    expect(health.status).toBe(200);
    expect(health.json()).toEqual({ status: 'degraded', reasons: [expect.stringContaining(`TLS certificate of ${host} not accepted`)] });
    const status = await statusShowing(s.configPath, 'tls');
    expect(status).toContain(`TLS certificate of ${host} not accepted: UNABLE_TO_VERIFY_LEAF_SIGNATURE`);
    expect(status).toContain(`uploads to ${host} wait and are tried again (nothing is given up for it)`);

    // Not retried at full rate: every wait is upload.retry_max, so a window of 3 waits sees few handshakes.
    const before = s.alo.connections;
    await new Promise((r) => setTimeout(r, 3 * RETRY_MAX_S * 1000));
    const during = s.alo.connections - before;
    const retries = d.events('upload.retry').filter((l) => l.kind === 'configuration');
    expect(retries.length).toBeGreaterThan(0);
    expect(retries.every((l) => l.delayMs === RETRY_MAX_S * 1000)).toBe(true);
    // Two callers try (the upload and the incident report), each at most once per wait, and one more each at the window's edges.
    expect(during).toBeGreaterThan(0);
    expect(during).toBeLessThanOrEqual(2 * 4);
    expect(failedRows(s.ledgerPath)).toEqual([]);
    expect(ledgerRows(s.ledgerPath, `SELECT state FROM uploads`)).toEqual([{ state: 'queued' }]);
    await stopDaemon(d);

    // The installer adds the CA (and restarts): the upload completes with the file's content.
    await writeSiteConfig(s.dir, { targets: { alo: aloTargetConfig(s.alo.baseUrl) }, sections: { network: { ca_file: ca.caFile } } });
    const fixed = h.daemon(s);
    await uploadedIntact(s, fixed, 'inc-tls', sha);
    expect(failedRows(s.ledgerPath)).toEqual([]);
    await waitFor(async () => !(await statusText(s.configPath)).includes('PROBLEM'), 15_000, 'status without a problem');
  }, 90_000);
});
