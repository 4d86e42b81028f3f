/**
 * A real forward proxy on loopback: Debian's tinyproxy, run in the foreground (`tinyproxy -d -c
 * conf`) with a configuration written for the test into its own directory, optionally with
 * BasicAuth. Its log (LogLevel Connect) records every request it received (`CONNECT host:port`
 * for a tunnel, `GET http://host/path` for an absolute-form request) and every connection it
 * opened to a server: what the tests count against what the emulators received.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { tempDir } from './files.js';

export interface TinyproxyOptions {
  /** BasicAuth: only requests with this user and password are let through (others get 407). */
  auth?: { user: string; password: string };
  /** The port to listen on: a proxy restarted on a port the daemon already uses. Default: a free one. */
  port?: number;
  /** The only ports CONNECT may reach (others get 403), as many proxies allow only 443. Default: any. */
  connectPorts?: number[];
}

/** One request line of the proxy's log. */
export interface ProxiedRequest {
  method: string;
  /** `host:port` of a CONNECT, the absolute URL of any other request. */
  target: string;
}

/** A port nothing listens on right now (for a proxy that comes up later). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export class Tinyproxy {
  private constructor(
    readonly port: number,
    private readonly logFile: string,
    private readonly child: ChildProcess,
    private readonly exited: Promise<number | null>,
    private readonly cleanup: () => Promise<void>,
  ) {}

  /** `http://127.0.0.1:PORT`, without credentials. */
  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  static async start(options: TinyproxyOptions = {}): Promise<Tinyproxy> {
    const dir = await tempDir('vms-uplink-tinyproxy-');
    const port = options.port ?? (await freePort());
    const logFile = join(dir.path, 'tinyproxy.log');
    const conf = join(dir.path, 'tinyproxy.conf');
    await writeFile(
      conf,
      [
        `Port ${port}`,
        'Listen 127.0.0.1',
        'Timeout 60',
        `LogFile "${logFile}"`,
        // Connect: one line per request and per connection opened to a server, nothing else.
        'LogLevel Connect',
        'MaxClients 100',
        ...(options.auth ? [`BasicAuth ${options.auth.user} ${options.auth.password}`] : []),
        ...(options.connectPorts ?? []).map((p) => `ConnectPort ${p}`),
      ].join('\n') + '\n',
    );
    const child = spawn('tinyproxy', ['-d', '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((resolve, reject) => {
      child.once('exit', (code) => resolve(code));
      child.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          err.code === 'ENOENT'
            ? new Error('tinyproxy is not installed: the proxy tests run the real one (apt-get install tinyproxy; .ci/run installs it)')
            : err,
        ),
      );
    });
    const proxy = new Tinyproxy(port, logFile, child, exited, dir.cleanup);
    const deadline = Date.now() + 10_000;
    for (;;) {
      const outcome = await Promise.race([exited.then((code) => ({ code })), accepts(port).then((ok) => ({ ok }))]);
      if ('code' in outcome) {
        await dir.cleanup();
        throw new Error(`tinyproxy exited with ${outcome.code} before it listened on port ${port}: ${stderr}`);
      }
      if (outcome.ok) return proxy;
      if (Date.now() > deadline) {
        await proxy.close();
        throw new Error(`tinyproxy did not listen on port ${port} within 10 s: ${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** The proxy URL with credentials, as network.proxy or HTTPS_PROXY takes it. */
  url(auth?: { user: string; password: string }): string {
    return auth ? `http://${auth.user}:${auth.password}@127.0.0.1:${this.port}` : this.origin;
  }

  private async log(): Promise<string> {
    return readFile(this.logFile, 'utf8').catch(() => '');
  }

  /** Every request the proxy received, refused ones included, in order. */
  async requests(): Promise<ProxiedRequest[]> {
    return [...(await this.log()).matchAll(/: Request \(file descriptor \d+\): (\S+) (\S+) HTTP\/1\.[01]$/gm)].map((m) => ({
      method: m[1]!,
      target: m[2]!,
    }));
  }

  /** Connections the proxy opened to servers (one per tunnel, one per absolute-form request). */
  async connectionsOpened(): Promise<number> {
    return [...(await this.log()).matchAll(/: Established connection to host "[^"]+" using file descriptor \d+\.$/gm)].length;
  }

  /** Stops the proxy (SIGTERM, then SIGKILL after 5 s); its log stays readable until close(). */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await this.exited.catch(() => undefined);
    clearTimeout(timer);
  }

  async close(): Promise<void> {
    await this.stop();
    await this.cleanup();
  }
}

/** Whether something accepts TCP connections on the loopback port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
