/**
 * The image as a recorder box runs it. Built from the repository by the global setup, it is
 * started the way docker-compose.example.yml says (read-only root, every capability dropped, the
 * recorder-first CPU and I/O weights, its stop grace period) as the image's uid 1000, with the
 * exports mounted read-only, the ALO token as a secret file, the ledger on a named volume, and
 * host networking to the ALO emulator and its S3 store, which run in this process on loopback.
 * The steps follow one box's life, so each test starts where the one before left off.
 */
import { randomUUID } from 'node:crypto';
import { chmod, chown, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { AloIncident } from '../emulators/alo.js';
import { aloTargetConfig, ALO_TOKEN, startAloSite, type AloSite } from '../support/alo-site.js';
import { waitFor, writeConfig } from '../support/daemon-process.js';
import { MiB, sha256File } from '../support/files.js';
import { ledgerRows, ledgerRowsSoFar } from '../support/ledger.js';
import { writeIncident } from '../support/manifest.js';
import { TEST_UPLOAD, TEST_WATCH } from '../support/site.js';
import { docker, dockerOk, tail } from './engine.js';
import { buildImage, repoRoot } from './image-build.js';

const IMAGE = inject('dockerImage');
/** Short, so the test waits seconds; the daemon's default is 10 s. */
const DRAIN_SECONDS = 3;
/** What `docker stop` may take beyond the daemon's own exit. */
const DOCKER_STOP_MARGIN_MS = 10_000;
/** The daemon in the image uses the image's paths; the test's files are mounted there. */
const LEDGER = '/var/lib/vms-uplink/ledger.db';

interface ComposeService {
  read_only?: boolean;
  cap_drop?: string[];
  security_opt?: string[];
  cpu_shares?: number;
  blkio_config?: { weight?: number };
  stop_grace_period?: string;
}

/** The `docker run` flags docker-compose.example.yml's service stands for (no compose plugin here). */
async function composeExample(): Promise<{ service: ComposeService; flags: string[]; graceSeconds: number }> {
  const compose = parse(await readFile(join(repoRoot(), 'docker-compose.example.yml'), 'utf8')) as {
    services: Record<string, ComposeService>;
  };
  const service = compose.services['vms-uplink']!;
  const graceSeconds = Number(/^(\d+)s$/.exec(service.stop_grace_period ?? '')?.[1]);
  expect(graceSeconds, 'stop_grace_period in seconds').toBeGreaterThan(10);
  const flags = [
    ...(service.read_only ? ['--read-only'] : []),
    ...(service.cap_drop ?? []).flatMap((c) => ['--cap-drop', c]),
    ...(service.security_opt ?? []).flatMap((o) => ['--security-opt', o]),
    ...(service.cpu_shares !== undefined ? ['--cpu-shares', String(service.cpu_shares)] : []),
    ...(service.blkio_config?.weight !== undefined ? ['--blkio-weight', String(service.blkio_config.weight)] : []),
    '--stop-timeout',
    String(graceSeconds),
  ];
  return { service, flags, graceSeconds };
}

interface Inspected {
  State: { Running: boolean; ExitCode: number; OOMKilled: boolean };
  Config: { User: string };
  HostConfig: { ReadonlyRootfs: boolean; CapDrop: string[] | null; SecurityOpt: string[] | null; CpuShares: number; BlkioWeight: number };
}

async function inspect(name: string): Promise<Inspected> {
  return (JSON.parse(await dockerOk(['inspect', name])) as Inspected[])[0]!;
}

describe('the image, run as the compose example says', () => {
  const suffix = randomUUID().slice(0, 8);
  const volume = `vms-uplink-test-ledger-${suffix}`;
  const containers: string[] = [];
  let site: AloSite;
  let compose: Awaited<ReturnType<typeof composeExample>>;
  let configPath: string;
  let tokenPath: string;
  let ledgerOnHost: string;

  beforeAll(async () => {
    compose = await composeExample();
    site = await startAloSite();
    // The container's own config: the image's paths, the token read from the secret file.
    const containerDir = join(site.dir, 'container');
    await mkdir(containerDir);
    configPath = await writeConfig(containerDir, {
      watch: { root: '/srv/vms/exports', ...TEST_WATCH },
      ledger: { path: LEDGER },
      // A stalled part stays in flight until the stop instead of being retried.
      upload: { ...TEST_UPLOAD, stall_timeout: 120, drain_timeout: DRAIN_SECONDS },
      targets: { alo: { ...aloTargetConfig(site.alo.baseUrl), auth: { bearer_file: '${CREDENTIALS_DIRECTORY}/alo_token' } } },
      log: { level: 'info' },
    });
    // As the Dockerfile asks of a site: the secret readable by group 1000, not by everyone.
    tokenPath = join(containerDir, 'alo_token');
    await writeFile(tokenPath, `${ALO_TOKEN}\n`);
    await chown(tokenPath, 0, 1000);
    await chmod(tokenPath, 0o640);
    await dockerOk(['volume', 'create', volume]);
    ledgerOnHost = join(await dockerOk(['volume', 'inspect', '--format', '{{.Mountpoint}}', volume]), 'ledger.db');
  });

  afterAll(async () => {
    for (const name of containers) await docker(['rm', '--force', '--volumes', name]);
    await docker(['volume', 'rm', '--force', volume]);
    await site?.close();
  });

  /** `docker run -d` of the image as the compose example has it; returns what docker printed on stderr (warnings). */
  async function startContainer(name: string): Promise<string> {
    const r = await docker([
      'run',
      '--detach',
      '--name',
      name,
      '--network',
      'host',
      ...compose.flags,
      '--volume',
      `${site.exportsRoot}:/srv/vms/exports:ro`,
      '--volume',
      `${configPath}:/etc/vms-uplink/config.yaml:ro`,
      '--volume',
      `${tokenPath}:/run/secrets/alo_token:ro`,
      '--volume',
      `${volume}:/var/lib/vms-uplink`,
      IMAGE,
    ]);
    containers.push(name);
    expect(r.code, `docker run: ${r.stderr}`).toBe(0);
    return r.stderr;
  }

  /** waitFor, failing with the container's last log lines. */
  async function waitOn<T>(name: string, check: () => T | undefined | false, what: string, timeoutMs = 60_000): Promise<T> {
    try {
      return await waitFor(check, timeoutMs, what);
    } catch (err) {
      const logs = await docker(['logs', name]);
      throw new Error(`${(err as Error).message}\n${name} logged:\n${tail(logs.stdout + logs.stderr)}`, { cause: err });
    }
  }

  /** ALO's incident once it lists one uploaded video. */
  function waitReported(name: string, incidentId: string, what: string): Promise<AloIncident> {
    return waitOn(
      name,
      () => {
        const i = site.alo.incident(incidentId);
        return i && i.uploaded_videos.length === 1 ? i : undefined;
      },
      what,
    );
  }

  /** `docker stop` with the grace period of the compose example: how long it took and how the container ended. */
  async function stopContainer(name: string): Promise<{ ms: number; code: number | null; state: Inspected['State'] }> {
    const r = await docker(['stop', name]);
    return { ms: r.ms, code: r.code, state: (await inspect(name)).State };
  }

  const first = `vms-uplink-test-a-${suffix}`;
  const second = `vms-uplink-test-b-${suffix}`;
  const delivered = 'docker-delivered-1';
  const interrupted = 'docker-interrupted-1';
  let runWarnings = '';

  it('uploads an exported incident byte for byte and reports it, failed export included, to ALO', async () => {
    runWarnings = await startContainer(first);
    const shas = await writeIncident(site.exportsRoot, delivered, [
      { id: 'v1', file: 'cam01.mp4', size: 12 * MiB + 123 },
      { id: 'v2', errors: ['G64 export failed with: No video available for the camera during the selected time period.'] },
    ]);
    const incident = await waitReported(first, delivered, 'the video uploaded and reported');
    const key = incident.uploaded_videos[0]!.s3_key;
    expect(await site.store.objectSha256(key)).toBe(shas.get('v1'));
    expect(site.store.objectSize(key)).toBe(12 * MiB + 123);
    expect(
      site.store.requests
        .filter((r) => r.key === key && r.method === 'PUT' && r.status === 200)
        .map((r) => r.partNumber)
        .sort(),
    ).toEqual([1, 2, 3]);
    expect(incident.failed_videos).toEqual([
      expect.objectContaining({ id: 'v2', upload_errors: [expect.stringContaining('G64 export failed')] }),
    ]);
  });

  it('runs as uid 1000 on a read-only root, with read-only exports, and writes only its ledger volume', async () => {
    const info = await inspect(first);
    expect(info.Config.User).toBe('1000:1000');
    expect(info.HostConfig.ReadonlyRootfs).toBe(true);
    expect(info.HostConfig.CapDrop).toEqual(compose.service.cap_drop);
    expect(info.HostConfig.SecurityOpt).toEqual(compose.service.security_opt);
    // Every process of the container (tini as PID 1, node under it), as the host sees them.
    const top = (await dockerOk(['top', first, '-eo', 'pid,uid,args'])).split('\n').slice(1);
    expect(top.join('\n')).toMatch(/tini/);
    expect(top.join('\n')).toMatch(/node \/app\/dist\/src\/cli\.js run/);
    expect(top.map((line) => line.trim().split(/\s+/)[1])).toEqual(top.map(() => '1000'));
    expect(await dockerOk(['exec', first, 'id', '-u'])).toBe('1000');

    for (const path of ['/probe', '/app/probe', '/srv/vms/exports/probe']) {
      const write = await docker(['exec', first, 'sh', '-c', `echo probe > ${path}`]);
      expect(write.code, `writing ${path}`).not.toBe(0);
      expect(write.stderr).toMatch(/Read-only file system/);
    }
    // The named volume took the image directory's owner, so the daemon could create its ledger there.
    expect((await stat(join(ledgerOnHost, '..'))).uid).toBe(1000);
    expect((await stat(ledgerOnHost)).uid).toBe(1000);
  });

  it('gets the CPU and I/O weights of the compose example, so the recorder comes first', async () => {
    const info = await inspect(first);
    const shares = compose.service.cpu_shares!;
    expect(info.HostConfig.CpuShares).toBe(shares);
    // What the kernel was told: cpu.shares under cgroup v1, cpu.weight (runc's conversion) under v2.
    const cgroup = await dockerOk([
      'exec',
      first,
      'sh',
      '-c',
      'if [ -e /sys/fs/cgroup/cpu/cpu.shares ]; then echo v1 $(cat /sys/fs/cgroup/cpu/cpu.shares); else echo v2 $(cat /sys/fs/cgroup/cpu.weight); fi',
    ]);
    expect(cgroup).toBe(cgroup.startsWith('v1') ? `v1 ${shares}` : `v2 ${1 + Math.floor(((shares - 2) * 9999) / 262142)}`);
    // The I/O weight is applied where the kernel offers one; elsewhere Docker says it discarded it.
    const weight = compose.service.blkio_config!.weight!;
    if (info.HostConfig.BlkioWeight === 0) expect(runWarnings).toMatch(/does not support Block I\/O weight.*Weight discarded/);
    else expect(info.HostConfig.BlkioWeight).toBe(weight);
  });

  it('stops on `docker stop` mid-upload: the part in flight gets the drain deadline, then exit 0', async () => {
    // Part 2 of the next upload reaches S3 and is never answered.
    site.store.injectFaults({ kind: 'stall', partNumber: 2 });
    await writeIncident(site.exportsRoot, interrupted, [{ id: 'v1', file: 'cam01.mp4', size: 17 * MiB }]);
    const partsOf = (): Array<{ number: number; state: string }> =>
      ledgerRowsSoFar(
        ledgerOnHost,
        'SELECT p.number, p.state FROM parts p JOIN uploads u ON u.id = p.upload_id WHERE u.incident_id = ? ORDER BY p.number',
        interrupted,
      );
    await waitOn(
      first,
      () => site.store.requests.some((r) => r.code === 'Stalled') && partsOf().filter((p) => p.state === 'done').length === 3,
      'parts 1, 3 and 4 recorded in the ledger, part 2 held by S3',
    );

    const stop = await stopContainer(first);
    console.log(`docker stop mid-upload: ${stop.ms.toFixed(0)} ms (drain_timeout ${DRAIN_SECONDS} s), exit code ${stop.state.ExitCode}`);
    expect(stop.code).toBe(0);
    expect(stop.state).toMatchObject({ Running: false, ExitCode: 0, OOMKilled: false });
    // It waited for the part in flight (the drain deadline), then left by itself, long before
    // Docker's SIGKILL at the end of the grace period (exit code 0, not 137). The margin is
    // Docker's own: taking down a container on vfs storage, on a busy machine, took up to 5 s.
    expect(stop.ms).toBeGreaterThanOrEqual(DRAIN_SECONDS * 1000 - 100);
    expect(stop.ms).toBeLessThan(DOCKER_STOP_MARGIN_MS + DRAIN_SECONDS * 1000);
    expect(DOCKER_STOP_MARGIN_MS + DRAIN_SECONDS * 1000).toBeLessThan(compose.graceSeconds * 1000);
    expect(ledgerRows(ledgerOnHost, 'SELECT state FROM uploads WHERE incident_id = ?', interrupted)).toEqual([{ state: 'queued' }]);
    expect(partsOf()).toEqual([
      { number: 1, state: 'done' },
      { number: 2, state: 'pending' },
      { number: 3, state: 'done' },
      { number: 4, state: 'done' },
    ]);
  });

  it('resumes from the ledger volume in a new container: only the unfinished part is sent, on the same multipart upload', async () => {
    const before = site.store.requests.length;
    await startContainer(second);
    const incident = await waitReported(second, interrupted, 'the interrupted video completed and reported');
    const key = incident.uploaded_videos[0]!.s3_key;
    expect(await site.store.objectSha256(key)).toBe(await sha256File(join(site.exportsRoot, interrupted, 'cam01.mp4')));
    const since = site.store.requests.slice(before);
    expect(since.map((r) => ({ key: r.key, part: r.partNumber, status: r.status }))).toEqual([{ key, part: 2, status: 200 }]);
    // One multipart upload per video: the second container completed the one the first began.
    expect(site.alo.calls.filter((c) => c.route === 'create_multipart_upload' && c.status === 200)).toHaveLength(2);
    expect(site.alo.calls.filter((c) => c.route === 'complete_multipart_upload' && c.status === 200)).toHaveLength(2);
    expect(site.store.openMultipartUploads()).toEqual([]);

    const stop = await stopContainer(second);
    console.log(`docker stop when idle: ${stop.ms.toFixed(0)} ms, exit code ${stop.state.ExitCode}`);
    expect(stop.code).toBe(0);
    expect(stop.state).toMatchObject({ Running: false, ExitCode: 0 });
    expect(stop.ms).toBeLessThan(DOCKER_STOP_MARGIN_MS);
  });
});

describe('the build behind a TLS-inspecting proxy', () => {
  const caCerts = inject('buildCaCerts');

  it('keeps the CA given as EXTRA_CA_CERTS out of the final image and its history', async () => {
    const history = await dockerOk(['history', '--no-trunc', '--format', '{{.CreatedBy}}', IMAGE]);
    expect(history).toContain('tini');
    expect(history).not.toContain('BEGIN CERTIFICATE');
    expect(history).not.toContain('EXTRA_CA_CERTS');
    const leftovers = await docker(['run', '--rm', '--network', 'none', '--entrypoint', 'sh', IMAGE, '-c', 'ls /tmp; env']);
    expect(leftovers.code).toBe(0);
    expect(leftovers.stdout).not.toMatch(/extra-ca|NODE_EXTRA_CA_CERTS|BEGIN CERTIFICATE/);
  });

  // A machine whose registry traffic is not inspected has no CA to pass and nothing to show here.
  it.skipIf(!caCerts)('needs it: without EXTRA_CA_CERTS, npm ci in the build stage refuses the proxy certificate', async () => {
    const build = await buildImage({ base: inject('dockerBase'), target: 'build' });
    const refusal = /.*(SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT|unable to verify the first certificate).*/.exec(
      build.stdout + build.stderr,
    );
    console.log(`build stage without EXTRA_CA_CERTS: exit ${build.code} after ${(build.ms / 1000).toFixed(1)} s: ${refusal?.[0].trim()}`);
    expect(build.code).not.toBe(0);
    expect(refusal, tail(build.stdout + build.stderr)).not.toBeNull();
  });
});
