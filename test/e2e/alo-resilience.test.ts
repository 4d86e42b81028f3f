/**
 * What must hold whatever happens to the box or the network: SIGKILL mid-upload, presigned URLs
 * expiring, 503s, connection resets, stalls, a file changing under us, SIGTERM with parts in
 * flight. Each test asserts what the user gets: the bytes in the store, what ALO received, the
 * ledger rows, the exit code.
 */
import { appendFile, open, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { DaemonProcess, waitFor } from '../support/daemon-process.js';
import { MiB, sha256File } from '../support/files.js';
import { ledgerRows, ledgerRowsSoFar } from '../support/ledger.js';
import { writeIncident, writeOneVideoIncident } from '../support/manifest.js';
import { ALO_TOKEN, startAloSite, type AloSite } from '../support/alo-site.js';

let site: AloSite;
const daemons: DaemonProcess[] = [];

afterEach(async () => {
  for (const d of daemons.splice(0)) {
    d.kill('SIGKILL');
    await d.exited;
  }
  await site?.close();
});

/** Error paths log URLs and platform answers: none of them may carry a secret. */
function expectNoSecretsLogged(d: DaemonProcess): void {
  const text = d.output();
  expect(text).not.toContain(ALO_TOKEN);
  expect(text).not.toMatch(/X-Amz-Signature=[0-9a-f]/i);
  expect(text).not.toMatch(/X-Amz-Credential=[A-Z0-9]/i);
}

function start(): DaemonProcess {
  const d = DaemonProcess.run(site.configPath);
  daemons.push(d);
  return d;
}

async function reportedKey(id: string, timeoutMs = 30_000): Promise<string> {
  return waitFor(() => site.alo.incident(id)?.uploaded_videos[0]?.s3_key, timeoutMs, `incident ${id} reported as uploaded`);
}

const okPuts = (key: string): Array<{ partNumber?: number }> =>
  site.store.requests.filter((r) => r.method === 'PUT' && r.key === key && r.status === 200);

describe('crash and restart', () => {
  it('resumes after SIGKILL at the first unfinished part; finished parts are not sent again', async () => {
    site = await startAloSite({ upload: { concurrency: 2 } });
    site.store.setLatency(150);
    const sha = await writeOneVideoIncident(site.exportsRoot, 'kill-1', 40 * MiB + 7); // 9 parts of 5 MiB

    const first = start();
    await waitFor(
      () => ledgerRowsSoFar(site.ledgerPath, `SELECT number FROM parts WHERE state = 'done'`).length >= 3,
      30_000,
      'three parts done',
    );
    first.kill('SIGKILL');
    expect(await first.exited).toEqual({ code: null, signal: 'SIGKILL' });

    const doneBefore = ledgerRows<{ number: number }>(site.ledgerPath, `SELECT number FROM parts WHERE state = 'done'`).map(
      (r) => r.number,
    );
    expect(doneBefore.length).toBeGreaterThanOrEqual(3);
    expect(doneBefore.length).toBeLessThan(9);
    const integrity = new Database(site.ledgerPath, { readonly: true });
    expect(integrity.pragma('integrity_check', { simple: true })).toBe('ok');
    integrity.close();

    start();
    const key = await reportedKey('kill-1');
    expect(await site.store.objectSha256(key)).toBe(sha);
    const puts = okPuts(key);
    for (const n of doneBefore)
      expect(
        puts.filter((p) => p.partNumber === n),
        `part ${n}`,
      ).toHaveLength(1);
    // Re-sent: at most the parts that were in flight at the kill (concurrency 2).
    expect(puts.length - 9).toBeLessThanOrEqual(2);
    // The same multipart upload was continued, not started twice.
    expect(site.alo.calls.filter((c) => c.route === 'create_multipart_upload')).toHaveLength(1);
    // Presigned URLs were asked for again after the restart, not reused from before the kill.
    expect(site.alo.calls.filter((c) => c.route === 'upload_urls' && c.status === 200).length).toBeGreaterThanOrEqual(2);
  });
});

describe('network and platform faults', () => {
  it('rides out 503s, connection resets and a lost answer to complete', async () => {
    site = await startAloSite();
    site.store.injectFaults(
      { kind: 'status', status: 503, code: 'SlowDown', partNumber: 2 },
      { kind: 'status', status: 503, code: 'SlowDown', partNumber: 2 },
      { kind: 'reset-midbody', afterBytes: MiB, partNumber: 1 },
      { kind: 'reset-before', partNumber: 3 },
    );
    site.alo.failNext('upload_urls', 2, 503);
    site.alo.failNext('put_incident', 2, 500);
    site.alo.resetNext('complete_multipart_upload', 1, 'after');
    const sha = await writeOneVideoIncident(site.exportsRoot, 'faults-1', 12 * MiB + 5);

    const d = start();
    const key = await reportedKey('faults-1');
    expect(await site.store.objectSha256(key)).toBe(sha);
    expect(d.events('upload.retry').length).toBeGreaterThanOrEqual(5);
    // The failing URLs were logged (so the check below has something to look at), masked.
    expect(JSON.stringify(d.logs)).toContain('X-Amz-Signature=***');
    expectNoSecretsLogged(d);
    // The complete went through the first time; its answer was lost, and the 404 that followed counts as done.
    expect(site.alo.calls.filter((c) => c.route === 'complete_multipart_upload').map((c) => c.status)).toEqual([0, 404]);
    expect(site.store.requests.filter((r) => r.key === key && r.status === 503)).toHaveLength(2);
  });

  it('asks for new URLs when S3 refuses one, and when they near expiry', async () => {
    site = await startAloSite({ upload: { concurrency: 1 }, emulator: { urlExpiresSeconds: 2 } });
    site.store.setLatency(400);
    site.store.injectFaults({ kind: 'status', status: 403, code: 'AccessDenied', partNumber: 2 });
    const sha = await writeOneVideoIncident(site.exportsRoot, 'expiry-1', 35 * MiB); // 7 parts × 400 ms: longer than the URLs live

    const d = start();
    const key = await reportedKey('expiry-1');
    expect(await site.store.objectSha256(key)).toBe(sha);
    expectNoSecretsLogged(d);
    const urlCalls = site.alo.calls.filter((c) => c.route === 'upload_urls' && c.status === 200);
    expect(urlCalls.length).toBeGreaterThanOrEqual(3);
    // No part was ever sent with an expired URL: renewal came first.
    expect(site.store.requests.filter((r) => r.code === 'AccessDenied' && r.status === 403)).toHaveLength(1);
  });

  it('aborts a part that stalls and sends it again', async () => {
    site = await startAloSite({ upload: { stall_timeout: 1 } });
    site.store.injectFaults({ kind: 'stall', partNumber: 1 });
    const sha = await writeOneVideoIncident(site.exportsRoot, 'stall-1', 6 * MiB);

    start();
    const key = await reportedKey('stall-1');
    expect(await site.store.objectSha256(key)).toBe(sha);
    expect(site.store.requests.filter((r) => r.code === 'Stalled')).toHaveLength(1);
  });

  it('fails a file ALO refuses with its reason, aborts the multipart upload, and carries on with the rest', async () => {
    site = await startAloSite({ emulator: { maxUploadSizeMb: 8 } });
    const shas = await writeIncident(site.exportsRoot, 'limit-1', [
      { id: 'big', file: 'big.mp4', size: 9 * MiB },
      { id: 'small', file: 'small.mp4', size: 3 * MiB },
    ]);

    start();
    const incident = await waitFor(
      () => {
        const i = site.alo.incident('limit-1');
        return i && i.uploaded_videos.length === 1 && i.failed_videos.length === 1 ? i : undefined;
      },
      30_000,
      'one uploaded, one failed',
    );
    expect(await site.store.objectSha256(incident.uploaded_videos[0]!.s3_key)).toBe(shas.get('small'));
    expect(incident.failed_videos[0]!.id).toBe('big');
    expect(incident.failed_videos[0]!.upload_errors.join(' ')).toMatch(/at most 8 MB \(max_upload_size_mb\)/);
    await waitFor(() => site.alo.calls.some((c) => c.route === 'abort_multipart_upload' && c.status === 200), 10_000, 'abort');
    expect(site.store.openMultipartUploads()).toEqual([]);
  });
});

describe('files that change', () => {
  /** A one-video incident uploading slowly, one part at a time; returns the video's path once its first part is sent. */
  async function uploadUnderWay(id: string, size: number): Promise<string> {
    site = await startAloSite({ upload: { concurrency: 1 } });
    site.store.setLatency(200);
    await writeOneVideoIncident(site.exportsRoot, id, size);
    const d = start();
    await waitFor(() => d.events('upload.part.done').length >= 1, 30_000, 'first part sent');
    return join(site.exportsRoot, id, 'cam01.mp4');
  }

  it('restarts an upload whose file is rewritten after hashing, and completes only the new content', async () => {
    const path = await uploadUnderWay('change-1', 20 * MiB);
    // Rewrite the last part in place, keeping size and mtime: only the content check can notice.
    const before = await stat(path);
    const fh = await open(path, 'r+');
    await fh.write(Buffer.alloc(1024, 0xab), 0, 1024, 19 * MiB);
    await fh.close();
    await utimes(path, before.atime, before.mtime);
    const newSha = await sha256File(path);

    const key = await reportedKey('change-1');
    expect(await site.store.objectSha256(key)).toBe(newSha);
    const restarts = ledgerRows<{ restarts: number }>(site.ledgerPath, `SELECT restarts FROM videos`);
    expect(restarts[0]!.restarts).toBeGreaterThanOrEqual(1);
    // The first multipart upload was given up and aborted, never completed with mixed content.
    expect(site.alo.calls.filter((c) => c.route === 'create_multipart_upload')).toHaveLength(2);
    expect(site.alo.calls.filter((c) => c.route === 'complete_multipart_upload' && c.status === 200)).toHaveLength(1);
  });

  it('restarts when the file grows before completion', async () => {
    const path = await uploadUnderWay('grow-1', 11 * MiB);
    await appendFile(path, Buffer.alloc(MiB, 7));
    const newSha = await sha256File(path);

    const key = await reportedKey('grow-1');
    expect(await site.store.objectSha256(key)).toBe(newSha);
  });
});

describe('shutdown', () => {
  it('drains on SIGTERM, exits 0, and the next start resumes', async () => {
    site = await startAloSite({ upload: { concurrency: 2, drain_timeout: 3 } });
    site.store.setLatency(1500);
    const sha = await writeOneVideoIncident(site.exportsRoot, 'term-1', 30 * MiB);

    const first = start();
    await waitFor(() => first.events('upload.started').length === 1, 30_000, 'upload started');
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    first.kill('SIGTERM');
    expect(await first.exited).toEqual({ code: 0, signal: null });
    expect(Date.now() - t0).toBeLessThan(6000);
    const doneBefore = ledgerRows<{ number: number }>(site.ledgerPath, `SELECT number FROM parts WHERE state = 'done'`).map(
      (r) => r.number,
    );
    expect(doneBefore.length).toBeLessThan(6);

    site.store.setLatency(0);
    start();
    const key = await reportedKey('term-1');
    expect(await site.store.objectSha256(key)).toBe(sha);
    for (const n of doneBefore) expect(okPuts(key).filter((p) => p.partNumber === n)).toHaveLength(1);
  });
});
