/**
 * What only ALO does when things go wrong: its API failing, the answer to complete lost (ALO then
 * answers 404 for an upload it completed), an upload refused by ALO's max_upload_size_mb, and a
 * file rewritten under an upload. SIGKILL resume, URL expiry, 503s, resets and refusals once an
 * upload exists are proven for every platform by the conformance suite (test/conformance); stalls
 * by network-faults.test.ts; SIGTERM drains by ledger-faults.test.ts and the daemon's component test.
 * Each test asserts what the user gets: the bytes in the store, what ALO received, the ledger rows.
 */
import { open, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DaemonProcess, waitFor } from '../support/daemon-process.js';
import { MiB, sha256File } from '../support/files.js';
import { ledgerRows } from '../support/ledger.js';
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

describe('ALO failing and refusing', () => {
  it("rides out ALO's API failing in the same multipart upload, and counts a complete whose answer was lost as done when ALO then says 404", async () => {
    site = await startAloSite();
    site.alo.failNext('upload_urls', 2, 503);
    site.alo.failNext('put_incident', 2, 500);
    site.alo.resetNext('complete_multipart_upload', 1, 'after');
    const sha = await writeOneVideoIncident(site.exportsRoot, 'faults-1', 12 * MiB + 5);

    const d = start();
    const key = await reportedKey('faults-1');
    expect(await site.store.objectSha256(key)).toBe(sha);
    const statuses = (route: string): number[] => site.alo.calls.filter((c) => c.route === route).map((c) => c.status);
    expect(statuses('upload_urls').slice(0, 3)).toEqual([503, 503, 200]);
    // The first report that gets through creates the incident (201).
    expect(statuses('put_incident').slice(0, 3)).toEqual([500, 500, 201]);
    // The complete went through the first time; its answer was lost, and the 404 that followed counts as done.
    expect(statuses('complete_multipart_upload')).toEqual([0, 404]);
    // URLs refused while the upload was being opened did not open another: one multipart upload, completed, none left open.
    expect(statuses('create_multipart_upload')).toEqual([200]);
    expect(site.store.openMultipartUploads()).toEqual([]);
    expectNoSecretsLogged(d);
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

describe('a file that changes', () => {
  it('restarts an upload whose file is rewritten after hashing, and completes only the new content', async () => {
    // One part at a time, slowly: the upload is under way when the file changes.
    site = await startAloSite({ upload: { concurrency: 1 } });
    site.store.setLatency(200);
    await writeOneVideoIncident(site.exportsRoot, 'change-1', 20 * MiB);
    const d = start();
    await waitFor(() => d.events('upload.part.done').length >= 1, 30_000, 'first part sent');
    const path = join(site.exportsRoot, 'change-1', 'cam01.mp4');
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
});
