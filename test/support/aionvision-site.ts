/**
 * A site for end-to-end tests on Aionvision: its emulator and S3 store on loopback, an export
 * folder, a ledger, and a config file with `targets: { aion: { type: aionvision, … } }` for the
 * real daemon. Chunk PUTs reach the store through a small recording proxy, so tests can see the
 * headers the daemon sent to presigned URLs (Content-Type, no credentials).
 */
import http from 'node:http';
import {
  AION_TEST_KEY,
  startAionvisionEmulator,
  type AionvisionEmulator,
  type AionvisionEmulatorOptions,
} from '../emulators/aionvision.js';
import { listen } from '../emulators/listen.js';
import { startS3Store, type S3Store } from '../emulators/s3-store.js';
import { tempDir } from './files.js';
import { writeSiteConfig, type SiteFiles } from './site.js';

export interface PresignedRequest {
  method: string;
  /** Path and query as the daemon sent them. */
  url: string;
  headers: http.IncomingHttpHeaders;
  at: number;
}

export interface AionSite extends SiteFiles {
  store: S3Store;
  aion: AionvisionEmulator;
  /** Every request the daemon sent to a presigned URL, with its headers. */
  presigned: PresignedRequest[];
  close(): Promise<void>;
}

export interface AionSiteOptions {
  upload?: Record<string, unknown>;
  watch?: Record<string, unknown>;
  /** Extra keys of `targets.aion`. */
  target?: Record<string, unknown>;
  emulator?: Partial<Omit<AionvisionEmulatorOptions, 'store'>>;
}

export async function startAionSite(options: AionSiteOptions = {}): Promise<AionSite> {
  const tmp = await tempDir();
  const store = await startS3Store();
  const presigned: PresignedRequest[] = [];
  const proxy = recordingProxy(store.origin, presigned);
  store.setPublicOrigin(await listen(proxy, '127.0.0.1', 0));
  const aion = await startAionvisionEmulator({ store, ...options.emulator });
  const files = await writeSiteConfig(tmp.path, {
    watch: options.watch,
    upload: options.upload,
    targets: { aion: { type: 'aionvision', base_url: aion.baseUrl, auth: { bearer: AION_TEST_KEY }, ...options.target } },
  });
  return {
    ...files,
    store,
    aion,
    presigned,
    async close() {
      await aion.close();
      const closed = new Promise<void>((resolve) => proxy.close(() => resolve()));
      proxy.closeAllConnections();
      await closed;
      await store.close();
      await tmp.cleanup();
    },
  };
}

/** Forwards every request to the store unchanged (Host included: it is signed) and records it. */
function recordingProxy(upstream: string, log: PresignedRequest[]): http.Server {
  const { hostname, port } = new URL(upstream);
  return http.createServer((req, res) => {
    log.push({ method: req.method ?? '', url: req.url ?? '', headers: { ...req.headers }, at: Date.now() });
    const out = http.request({ hostname, port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
      answer.on('error', () => res.destroy());
    });
    // The store reset the connection (an injected fault): so does the proxy.
    out.on('error', () => res.destroy());
    req.on('close', () => {
      if (!req.complete) out.destroy();
    });
    req.pipe(out);
  });
}
