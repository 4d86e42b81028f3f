/**
 * A certificate authority made while the test runs, with the `openssl` command line (as an
 * installer would make a private CA), and a server certificate it signed for loopback:
 * `localhost`, 127.0.0.1 and ::1. The emulators and the S3 store serve HTTPS with it; the daemon
 * trusts it only when its `network.ca_file` names `caFile`.
 */
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TlsIdentity } from '../emulators/listen.js';
import { tempDir } from './files.js';

export interface TestCa {
  /** The CA certificate (PEM): what network.ca_file points at. */
  caFile: string;
  caPem: string;
  /** Key and certificate for a server on loopback, signed by the CA. */
  server: TlsIdentity;
  close(): Promise<void>;
}

const run = promisify(execFile);

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await run('openssl', args, { cwd });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') {
      throw new Error('openssl is not installed: the TLS tests make their CA with it (apt-get install openssl)', { cause: err });
    }
    throw new Error(`openssl ${args[0]} failed: ${e.stderr ?? e.message}`, { cause: err });
  }
}

export async function createTestCa(): Promise<TestCa> {
  const dir = await tempDir('vms-uplink-ca-');
  const at = (name: string): string => join(dir.path, name);
  await openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=vms-uplink test CA',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
      '-keyout',
      'ca.key',
      '-out',
      'ca.pem',
    ],
    dir.path,
  );
  await openssl(
    ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', 'server.key', '-out', 'server.csr'],
    dir.path,
  );
  await writeFile(
    at('server.ext'),
    [
      'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1',
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
    ].join('\n'),
  );
  await openssl(
    [
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      'server.ext',
      '-out',
      'server.pem',
    ],
    dir.path,
  );
  return {
    caFile: at('ca.pem'),
    caPem: await readFile(at('ca.pem'), 'utf8'),
    server: { key: await readFile(at('server.key'), 'utf8'), cert: await readFile(at('server.pem'), 'utf8') },
    close: dir.cleanup,
  };
}
