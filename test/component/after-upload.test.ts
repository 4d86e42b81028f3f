/**
 * After-upload handling in this process, on real files and a real ledger file. The videos get
 * to "every target has them" through the ledger's own stages (planned from the real files,
 * uploads recorded done, the report acknowledged); the change window is crossed by moving the
 * test's clock, never by waiting.
 */
import { existsSync } from 'node:fs';
import { appendFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, type TestContext } from 'vitest';
import { AfterUpload } from '../../src/after/after-upload.js';
import type { Config } from '../../src/config/schema.js';
import { ExportChanges } from '../../src/watch/export-changes.js';
import { sha256File, writeThumbnail, writeVideo } from '../support/files.js';
import { harness } from '../support/harness.js';
import { incidentManifest, writeManifest } from '../support/manifest.js';
import { aloTarget, applyManifest, FakeClock, openLedger, planAll, testLog, type LedgerFile } from './fixtures.js';

const WINDOW_S = 600;

interface Bench {
  l: LedgerFile;
  clock: FakeClock;
  root: string;
  archive: string;
  folder: string;
  files: { video: string; thumbnail: string; manifest: string };
  after(action: 'delete' | 'move'): AfterUpload;
  /** Every upload of the incident completes, as the engine records it. */
  completeUploads(): Promise<void>;
  /** ALO acknowledges the incident's latest report. */
  ackReport(): Promise<void>;
  /** When the video settled (ms), as the ledger recorded it. */
  settledAt(): number;
  video(): { state: string; files_handled: string | null };
}

async function bench(ctx: TestContext): Promise<Bench> {
  const h = harness(ctx);
  const log = testLog(ctx);
  const l = await openLedger(h);
  const dir = await h.dir();
  const root = join(dir, 'exports');
  const archive = join(dir, 'archive');
  const folder = join(root, '2024-02-02', 'inc-1');
  const video = join(folder, 'cam01.mp4');
  const thumbnail = join(folder, 'cam01.jpg');
  await writeVideo(video, 200 * 1024);
  await writeThumbnail(thumbnail);
  const manifest = await writeManifest(folder, incidentManifest('inc-1', [{ id: 'v1', file: 'cam01.mp4', thumbnail: 'cam01.jpg' }]));
  await applyManifest(l.ledger, manifest);
  await planAll(l.ledger, [aloTarget(ctx, 'http://127.0.0.1:9/v1')], log);
  const clock = new FakeClock();
  const changes = new ExportChanges({ ledger: l.ledger.plan, windowMs: WINDOW_S * 1000, sweepMs: 60_000, log });
  return {
    l,
    clock,
    root,
    archive,
    folder,
    files: { video, thumbnail, manifest },
    after: (action) => {
      const config: Pick<Config, 'after_upload' | 'after_upload_dir' | 'retention' | 'watch'> = {
        after_upload: action,
        after_upload_dir: action === 'move' ? archive : undefined,
        retention: undefined,
        watch: { root, settle_seconds: 10, missing_file_seconds: WINDOW_S, poll: false, poll_interval: 2, rescan_interval: 300 },
      };
      const after = new AfterUpload({ config, ledger: l.ledger.after, targets: ['alo'], changes, log, clock });
      ctx.onTestFinished(() => after.stop());
      return after;
    },
    completeUploads: async () => {
      for (const { id, role } of l.rows<{ id: number; role: string }>("SELECT id, role FROM uploads WHERE state = 'queued'")) {
        await l.ledger.uploads.done(id, {
          result: { s3_key: `vms/inc-1/${role}` },
          sha256: `sha-${role}`,
          session: {},
          parts: [{ number: 1, etag: null, md5: '' }],
          startedAt: Date.now(),
        });
      }
    },
    ackReport: async () => {
      for (const due of l.ledger.reports.due(null, 10)) await l.ledger.reports.acked(due.incidentId, due.target, due.wanted);
    },
    settledAt: () => l.rows<{ settled_at: number }>('SELECT settled_at FROM videos')[0]!.settled_at,
    video: () => l.rows<{ state: string; files_handled: string | null }>('SELECT state, files_handled FROM videos')[0]!,
  };
}

describe('AfterUpload', () => {
  it('deletes the files once every target has them and ALO acknowledged the report, then the incident folder', async (ctx) => {
    const b = await bench(ctx);
    const after = b.after('delete');
    const exists = (): boolean[] => [b.files.video, b.files.thumbnail, b.files.manifest].map((f) => existsSync(f));
    b.clock.advance(b.settledAt() + WINDOW_S * 1000 - b.clock.now() + 1000);

    // Long past the change window, ALO acknowledged the report so far, but the uploads are
    // still queued: nothing is touched.
    await b.ackReport();
    await after.tick();
    expect(exists()).toEqual([true, true, true]);

    // Every upload done, but ALO has not acknowledged the report naming them: still nothing.
    await b.completeUploads();
    b.clock.advance(1000);
    await after.tick();
    expect(exists()).toEqual([true, true, true]);
    expect(b.video().files_handled).toBeNull();

    // Acknowledged: the files go, then the incident folder with its manifest.
    await b.ackReport();
    b.clock.advance(1000);
    await after.tick();
    expect(exists()).toEqual([false, false, false]);
    expect(existsSync(b.folder)).toBe(false);
    // The folder above (a date folder, not the incident's) stays.
    expect(existsSync(join(b.root, '2024-02-02'))).toBe(true);
    expect(b.video()).toEqual({ state: 'ready', files_handled: 'delete' });
    expect(b.l.rows('SELECT folder_handled FROM incidents')).toEqual([{ folder_handled: 'delete' }]);
  });

  it('moves the files below after_upload_dir once the change window has passed, keeping their path below the root', async (ctx) => {
    const b = await bench(ctx);
    const shas = await Promise.all([b.files.video, b.files.thumbnail].map((f) => sha256File(f)));
    await b.completeUploads();
    await b.ackReport();
    const after = b.after('move');

    // Settled 599.999 s ago by the clock: the exporter may still be writing to them.
    b.clock.advance(b.settledAt() + WINDOW_S * 1000 - 1 - b.clock.now());
    await after.tick();
    expect(existsSync(b.files.video)).toBe(true);
    expect(existsSync(b.archive)).toBe(false);
    expect(b.video().files_handled).toBeNull();

    b.clock.advance(1000);
    await after.tick();
    const moved = join(b.archive, '2024-02-02', 'inc-1');
    expect((await readdir(moved)).sort()).toEqual(['cam01.jpg', 'cam01.mp4', 'incident.json']);
    expect(await Promise.all([join(moved, 'cam01.mp4'), join(moved, 'cam01.jpg')].map((f) => sha256File(f)))).toEqual(shas);
    expect(existsSync(b.folder)).toBe(false);
    expect(b.video().files_handled).toBe('move');
    expect(b.l.rows('SELECT folder_handled FROM incidents')).toEqual([{ folder_handled: 'move' }]);
  });

  it('never deletes a file that changed after its upload: the video is uploaded again instead', async (ctx) => {
    const b = await bench(ctx);
    await b.completeUploads();
    await b.ackReport();
    const after = b.after('delete');
    // The exporter went on writing after the upload, and no watcher event told of it.
    await appendFile(b.files.video, Buffer.alloc(4096, 7));
    const grown = await sha256File(b.files.video);
    b.clock.advance(b.settledAt() + WINDOW_S * 1000 - b.clock.now());
    await after.tick();
    expect(existsSync(b.files.video)).toBe(true);
    expect(await sha256File(b.files.video)).toBe(grown);
    // Its thumbnail goes with it or not at all, and the folder stays.
    expect(existsSync(b.files.thumbnail)).toBe(true);
    expect(existsSync(b.files.manifest)).toBe(true);
    expect(b.video()).toEqual({ state: 'waiting', files_handled: null });

    // Later steps do not touch it either while it waits to settle again.
    b.clock.advance(WINDOW_S * 1000);
    await after.tick();
    expect(existsSync(b.files.video)).toBe(true);
    expect(b.l.rows('SELECT folder_handled FROM incidents')).toEqual([{ folder_handled: null }]);
  });
});
