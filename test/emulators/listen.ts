/** Starts an emulator's server and returns the origin it answers on (`http://127.0.0.1:PORT`, or https:// with TLS). */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';

/** A server's key and certificate (PEM), for an emulator served over HTTPS. */
export interface TlsIdentity {
  key: string;
  cert: string;
}

/** An HTTP server, or an HTTPS one when `tls` is given, for the same handler. */
export function createServer(handler: http.RequestListener, tls?: TlsIdentity): http.Server | https.Server {
  return tls ? https.createServer(tls, handler) : http.createServer(handler);
}

export async function listen(server: http.Server | https.Server, host: string, port: number): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const hostPart = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `${server instanceof https.Server ? 'https' : 'http'}://${hostPart}:${address.port}`;
}
