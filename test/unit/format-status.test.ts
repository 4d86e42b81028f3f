/**
 * What `vms-uplink status` prints, from a real ledger file: the rate and ETA computed from the
 * parts' done_at, paused cameras, one incident alone, progress bars on a terminal of a given
 * width, and the plain table for pipes and mail.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Ledger } from '../../src/ledger/ledger.js';
import type { StatusSnapshot } from '../../src/ledger/views/status.js';
import type { DaemonReport } from '../../src/status/daemon-status.js';
import { formatStatus, formatSummary } from '../../src/status/format-status.js';
import { formatDuration } from '../../src/status/units.js';
import { MiB } from '../support/files.js';
import { LedgerBuilder, partsOf } from '../support/ledger-builder.js';

/** The status command's clock in these tests; done_at values are set relative to it. */
const NOW = Date.UTC(2026, 10, 23, 12, 0, 0);
const SECOND = 1000;

let b: LedgerBuilder;
let ledger: Ledger;

beforeEach(async () => {
  b = await LedgerBuilder.create();
  ledger = b.ledger;
});
afterEach(() => b.close());

const applyIncident: LedgerBuilder['applyIncident'] = (...args) => b.applyIncident(...args);
const readyVideo: LedgerBuilder['readyVideo'] = (...args) => b.readyVideo(...args);
/** Marks parts done, `secondsAgo` before NOW. */
function partsDoneAgo(uploadId: number, secondsAgo: Record<number, number>): void {
  b.partsDoneAgo(uploadId, NOW, Object.fromEntries(Object.entries(secondsAgo).map(([n, s]) => [n, s * SECOND])));
}

function pauseCamera(id: string, at: number): void {
  b.sql.prepare(`INSERT INTO cameras (id, state, updated_at) VALUES (?, 'paused', ?)`).run(id, at);
}

const status = (options: { incidentId?: string } = {}): StatusSnapshot => ledger.status.snapshot({ now: NOW, ...options });
const upload = (s: StatusSnapshot, videoId: string) => s.incidents.flatMap((i) => i.videos).find((v) => v.id === videoId)!.uploads[0]!;

describe('readStatus: transfer rate and ETA from the parts done_at', () => {
  it('divides the bytes finished in the last minute by the time since the first part, when that is under a minute', async () => {
    await applyIncident('inc-1', [{ id: 'big', file: 'big.mp4' }]);
    const id = readyVideo('inc-1', 'big', partsOf(4, 3 * MiB));
    partsDoneAgo(id, { 1: 16, 2: 8 });
    // 6 MiB in 16 s; 6 MiB left.
    expect(upload(status(), 'big')).toMatchObject({
      state: 'uploading',
      bytesDone: 6 * MiB,
      bytesTotal: 12 * MiB,
      rateBytesPerSecond: (6 * MiB) / 16,
      etaSeconds: 16,
    });
  });

  it('counts only the last minute once the upload is older than that', async () => {
    await applyIncident('inc-1', [{ id: 'big', file: 'big.mp4' }]);
    const id = readyVideo('inc-1', 'big', partsOf(4, 3 * MiB));
    partsDoneAgo(id, { 1: 90, 2: 30 });
    const u = upload(status(), 'big');
    expect(u.rateBytesPerSecond).toBe((3 * MiB) / 60);
    expect(u.etaSeconds).toBe(Math.ceil((6 * MiB) / ((3 * MiB) / 60)));
  });

  it('never divides by less than 5 s, so the first part does not make the rate soar', async () => {
    await applyIncident('inc-1', [{ id: 'big', file: 'big.mp4' }]);
    const id = readyVideo('inc-1', 'big', partsOf(4, 3 * MiB));
    partsDoneAgo(id, { 1: 0.2 });
    expect(upload(status(), 'big').rateBytesPerSecond).toBe((3 * MiB) / 5);
  });

  it('has rate 0 and no ETA for a stalled upload, a queued one, and a done one', async () => {
    await applyIncident('inc-1', [
      { id: 'stalled', file: 'stalled.mp4' },
      { id: 'queued', file: 'queued.mp4' },
      { id: 'done', file: 'done.mp4' },
    ]);
    partsDoneAgo(readyVideo('inc-1', 'stalled', partsOf(2, MiB)), { 1: 61 });
    readyVideo('inc-1', 'queued', partsOf(2, MiB));
    const done = readyVideo('inc-1', 'done', partsOf(2, MiB));
    partsDoneAgo(done, { 1: 3, 2: 2 });
    await b.completed(done, { s3_key: 'k/done.mp4' });
    const s = status();
    expect(upload(s, 'stalled')).toMatchObject({ state: 'uploading', bytesDone: MiB, rateBytesPerSecond: 0, etaSeconds: null });
    expect(upload(s, 'queued')).toMatchObject({ state: 'queued', rateBytesPerSecond: 0, etaSeconds: null });
    expect(upload(s, 'done')).toMatchObject({ state: 'done', bytesDone: 2 * MiB, rateBytesPerSecond: 0, etaSeconds: null });
  });
});

describe('readStatus: paused cameras', () => {
  it('marks the videos of a paused camera and names it by the newest manifest; a camera without a row runs', async () => {
    await applyIncident('inc-1', [
      { id: 'v1', file: 'v1.mp4' },
      { id: 'v2', file: 'v2.mp4', camera_id: 'cam-2', camera_name: 'Dock' },
    ]);
    await applyIncident('inc-1', [
      { id: 'v1', file: 'v1.mp4', camera_name: 'Gate (north)' },
      { id: 'v2', file: 'v2.mp4', camera_id: 'cam-2', camera_name: 'Dock' },
    ]);
    pauseCamera('cam-1', NOW - 3600 * SECOND);
    b.sql.prepare(`INSERT INTO cameras (id, state, updated_at) VALUES ('cam-2', 'running', ?)`).run(NOW);
    const s = status();
    expect(s.pausedCameras).toEqual([
      { id: 'cam-1', name: 'Gate (north)', since: new Date(NOW - 3600 * SECOND).toISOString(), waiting: 0 },
    ]);
    expect(s.incidents[0]!.videos.map((v) => [v.id, v.cameraPaused])).toEqual([
      ['v1', true],
      ['v2', false],
    ]);
  });
});

describe('readStatus({ incidentId })', () => {
  it('holds that incident alone, its totals and its paused cameras', async () => {
    await applyIncident('inc-1', [
      { id: 'a', file: 'a.mp4' },
      { id: 'lost', errors: ['No video available'] },
    ]);
    await applyIncident('inc-2', [
      { id: 'b', file: 'b.mp4', camera_id: 'cam-2', camera_name: 'Dock' },
      { id: 'c', file: 'c.mp4', camera_id: 'cam-2' },
    ]);
    partsDoneAgo(readyVideo('inc-1', 'a', partsOf(2, MiB)), { 1: 5 });
    readyVideo('inc-2', 'b', partsOf(2, MiB));
    pauseCamera('cam-1', NOW);
    pauseCamera('cam-2', NOW);
    await ledger.watch.recordManifestError('/exports/inc-2/incident.json', 'f1', 's', ['videos[2].id: Required']);
    await ledger.watch.recordManifestError('/exports/elsewhere/incident.json', 'f2', 's', ['incident.id: Required']);

    const s = status({ incidentId: 'inc-2' });
    expect(s.incidents.map((i) => i.id)).toEqual(['inc-2']);
    expect(s.totals).toEqual({ queued: 1, uploading: 0, done: 0, failed: 0, waiting: 1, failedVideos: 0, refusedReports: 0 });
    expect(s.pausedCameras.map((c) => c.id)).toEqual(['cam-2']);
    expect(s.invalidManifests.map((m) => m.path)).toEqual(['/exports/inc-2/incident.json']);
    expect(status().totals).toEqual({ queued: 1, uploading: 1, done: 0, failed: 0, waiting: 1, failedVideos: 1, refusedReports: 0 });
    expect(status({ incidentId: 'no-such-incident' }).incidents).toEqual([]);
  });
});

/** One incident with a video uploading at 384 KiB/s (ETA 0:16), one done, one failed, one export that failed, one waiting. */
async function busyIncident(): Promise<void> {
  await applyIncident('8d1635ed-f747-427c-9b35-d83a08d08ab5', [
    { id: 'big', file: 'big.mp4', camera_id: 'cam-01a', camera_name: '192.168.0.241 - Camera - 01a' },
    { id: 'small', file: 'small.mp4' },
    { id: 'rejected', file: 'rejected.mp4' },
    { id: 'lost', errors: ['G64 export failed with: No video available for the camera during the selected time period.'] },
    { id: 'late', file: 'late.mp4' },
  ]);
  const incident = '8d1635ed-f747-427c-9b35-d83a08d08ab5';
  partsDoneAgo(readyVideo(incident, 'big', partsOf(4, 3 * MiB)), { 1: 16, 2: 8 });
  const small = readyVideo(incident, 'small', partsOf(1, 200 * 1024));
  partsDoneAgo(small, { 1: 30 });
  await b.completed(small, { s3_key: 'k/small.mp4' });
  const rejected = readyVideo(incident, 'rejected', partsOf(1, 3 * MiB));
  ledger.uploads.started(rejected, { mode: 'single' });
  ledger.uploads.failed(rejected, 'ALO answered 400: file exceeds max_upload_size_mb');
}

const DAEMON: DaemonReport = {
  daemon: { pid: 4242, running: true, startedAt: '2026-11-23T11:00:00.000Z', updatedAt: '2026-11-23T11:59:59.000Z' },
  ledgerFreeBytes: 1024,
  problems: [{ kind: 'ledger', since: '2026-11-23T11:58:00.000Z', message: 'ledger write failed: database or disk is full (SQLITE_FULL)' }],
};

describe('formatStatus on a terminal: progress bars', () => {
  it('shows the uploading video as a bar with percent, bytes, rate and ETA, within the width', async () => {
    await busyIncident();
    for (const columns of [80, 100, 132]) {
      const text = formatStatus(status(), DAEMON, { tty: true, columns });
      // The blocks: problems and totals, the bars, then the details (which may wrap, as any text does).
      const bars = text.split('\n\n')[1]!.split('\n');
      expect(bars[0]).toBe('incident 8d1635ed-f747-427c-9b35-d83a08d08ab5 "Break-in"');
      for (const line of bars) expect(line.length, `${columns} columns: ${line}`).toBeLessThanOrEqual(columns);
      const lines = text.split('\n');
      const bar = lines.find((l) => l.includes('big → alo'));
      expect(bar, text).toMatch(/^ {2}big → alo +\[#+\.+\] +50% +6\.0 MiB \/ 12\.0 MiB +384\.0 KiB\/s +ETA 0:16$/);
      expect(bar!.length).toBe(columns);
    }
    const narrow = formatStatus(status(), DAEMON, { tty: true, columns: 80 })
      .split('\n')
      .find((l) => l.includes('big → alo'))!;
    const wide = formatStatus(status(), DAEMON, { tty: true, columns: 132 })
      .split('\n')
      .find((l) => l.includes('big → alo'))!;
    expect(wide.match(/\[[#.]+\]/)![0].length - narrow.match(/\[[#.]+\]/)![0].length).toBe(132 - 80);
  });

  it('half done is half a bar', async () => {
    await busyIncident();
    const bar = formatStatus(status(), undefined, { tty: true, columns: 100 })
      .split('\n')
      .find((l) => l.includes('big → alo'))!;
    const [, filled, empty] = bar.match(/\[(#*)(\.*)\]/)!;
    expect(Math.abs(filled!.length - empty!.length)).toBeLessThanOrEqual(1);
  });

  it('cuts the label before the figures, drops the bar when there is no room for one, and cuts every line to the width', async () => {
    await busyIncident();
    const at60 = formatStatus(status(), undefined, { tty: true, columns: 60 }).split('\n\n')[1]!.split('\n');
    for (const line of at60) expect(line.length, line).toBeLessThanOrEqual(60);
    expect(at60).toContain('  big → a…  50%  6.0 MiB / 12.0 MiB  384.0 KiB/s  ETA 0:16');
    expect(at60).toContain('  rejecte…  failed: ALO answered 400: file exceeds max_uplo…');

    const lines = formatStatus(status(), undefined, { tty: true, columns: 40 }).split('\n');
    const big = lines.find((l) => l.startsWith('  big'))!;
    expect(big).not.toContain('[');
    expect(big.length).toBeLessThanOrEqual(40);
    expect(big).toBe('  big → a…  50%  6.0 MiB / 12.0 MiB  38…');
  });

  it('shows done, queued, failed, failed-export and waiting rows in words, the failure with its message', async () => {
    await busyIncident();
    const lines = formatStatus(status(), DAEMON, { tty: true, columns: 80 }).split('\n');
    expect(lines).toContain('incident 8d1635ed-f747-427c-9b35-d83a08d08ab5 "Break-in"');
    expect(lines.find((l) => l.includes('small → alo'))).toMatch(/^ {2}small → alo +done {2}200\.0 KiB$/);
    expect(lines.find((l) => l.includes('rejected → alo'))).toMatch(
      /^ {2}rejected → alo +failed: ALO answered 400: file exceeds max_upload_size_mb$/,
    );
    expect(lines.find((l) => l.startsWith('  lost'))).toMatch(/^ {2}lost +export failed$/);
    expect(lines.find((l) => l.startsWith('  late'))).toMatch(/^ {2}late +waiting for file$/);
    expect(lines).toContain('uploads: 1 uploading, 0 queued, 1 done, 1 failed; videos: 1 waiting for files, 1 failed');
    expect(lines).toContain(
      'PROBLEM (ledger, since 2026-11-23T11:58:00.000Z): ledger write failed: database or disk is full (SQLITE_FULL)',
    );
    expect(lines).toContain('      error: G64 export failed with: No video available for the camera during the selected time period.');
  });

  it('shows a 0-byte file as 0% while uploading and done once done, with no ETA', async () => {
    await applyIncident('inc-1', [
      { id: 'empty', file: 'empty.mp4' },
      { id: 'empty-done', file: 'empty-done.mp4' },
    ]);
    ledger.uploads.started(readyVideo('inc-1', 'empty', null, 0), { mode: 'single' });
    const done = readyVideo('inc-1', 'empty-done', null, 0);
    await b.completed(done, { s3_key: 'k/empty-done.mp4' });
    const lines = formatStatus(status(), undefined, { tty: true, columns: 80 }).split('\n');
    expect(lines.find((l) => l.includes('empty → alo'))).toMatch(/^ {2}empty → alo +\[\.+\] +0% {2}0 B \/ 0 B {2}0 B\/s {2}ETA --$/);
    expect(lines.find((l) => l.includes('empty-done → alo'))).toMatch(/^ {2}empty-done → alo +done {2}0 B$/);
    expect(
      formatStatus(status())
        .split('\n')
        .find((l) => l.includes('empty-done')),
    ).toMatch(/ done +0 B +0 B +100% /);
  });

  it('says a video waits because its camera is paused', async () => {
    await busyIncident();
    await applyIncident('inc-2', [{ id: 'next', file: 'next.mp4', camera_id: 'cam-01a', camera_name: '192.168.0.241 - Camera - 01a' }]);
    readyVideo('inc-2', 'next', partsOf(1, MiB));
    pauseCamera('cam-01a', NOW - 60 * SECOND);
    const text = formatStatus(status(), undefined, { tty: true, columns: 100 });
    expect(text).toContain('paused cameras (their videos wait until the camera is resumed):');
    expect(text).toContain(
      `  cam-01a "192.168.0.241 - Camera - 01a" paused since ${new Date(NOW - 60 * SECOND).toISOString()}: 2 video(s) waiting`,
    );
    expect(text.split('\n')).toContain('  next → alo      waiting: camera paused  1.0 MiB');
    expect(text.split('\n').find((l) => l.includes('big → alo'))).toMatch(/50% +6\.0 MiB \/ 12\.0 MiB +camera paused$/);
  });
});

describe('formatStatus elsewhere (a pipe, a file, a cron mail): a plain table', () => {
  /** The table's rows as cells, cut at the header's column starts. */
  function tableCells(text: string): { header: string; rows: Map<string, Record<string, string>> } {
    const lines = text.split('\n');
    const at = lines.findIndex((l) => l.startsWith('INCIDENT'));
    const header = lines[at]!;
    const titles = [...header.matchAll(/\S+/g)].map((m) => ({ title: m[0], start: m.index }));
    const rows = new Map<string, Record<string, string>>();
    for (const line of lines.slice(at + 1)) {
      if (line.trim() === '') break;
      const cells: Record<string, string> = {};
      // Right-aligned columns end where their title ends; left-aligned ones start where it starts.
      const spans = line.matchAll(/\S+(?: \S+)*/g);
      for (const span of spans) {
        const end = span.index + span[0].length;
        const column = titles.find((t) => t.start === span.index) ?? titles.find((t) => t.start + t.title.length === end);
        cells[column?.title ?? `?${span.index}`] = span[0];
      }
      rows.set(cells.VIDEO!, cells);
    }
    return { header, rows };
  }

  it('prints one aligned row per upload and per video without one, under the column titles', async () => {
    await busyIncident();
    const text = formatStatus(status(), DAEMON, { tty: false });
    const { header, rows } = tableCells(text);
    expect(header.split(/ {2,}/)).toEqual([
      'INCIDENT',
      'VIDEO',
      'CAMERA',
      'TARGET',
      'STATE',
      'DONE',
      'TOTAL',
      '%',
      'RATE',
      'ETA',
      'UPLOAD',
    ]);
    const id = '8d1635ed-f747-427c-9b35-d83a08d08ab5';
    const camera = '192.168.0.241 - Camera - 01a';
    expect(rows.get('big')).toMatchObject({
      INCIDENT: id,
      CAMERA: camera,
      TARGET: 'alo',
      STATE: 'uploading',
      DONE: '6.0 MiB',
      TOTAL: '12.0 MiB',
      '%': '50%',
      RATE: '384.0 KiB/s',
      ETA: '0:16',
    });
    expect(rows.get('small')).toMatchObject({
      CAMERA: 'Gate',
      STATE: 'done',
      DONE: '200.0 KiB',
      TOTAL: '200.0 KiB',
      '%': '100%',
      RATE: '-',
      ETA: '-',
    });
    expect(rows.get('rejected')).toMatchObject({
      STATE: 'failed',
      DONE: '0 B',
      TOTAL: '3.0 MiB',
      '%': '0%',
      UPLOAD: expect.stringMatching(/^#\d+$/),
    });
    expect(rows.get('lost')).toMatchObject({ TARGET: '-', STATE: 'export failed', DONE: '-', TOTAL: '-', UPLOAD: '-' });
    expect(rows.get('late')).toMatchObject({ STATE: 'waiting for file' });
    expect(text.split('\n').filter((l) => l.startsWith(id))).toHaveLength(5);
  });

  it('keeps the summary, the problems, the details and the manifests that do not validate around the table', async () => {
    await busyIncident();
    await ledger.watch.recordManifestError('/exports/broken/incident.json', 'f', 's', ['videos[1].id: Required']);
    const text = formatStatus(status(), DAEMON);
    expect(text).toMatch(/^PROBLEM \(ledger, since 2026-11-23T11:58:00\.000Z\): ledger write failed/m);
    expect(text).toMatch(/^uploads: 1 uploading, 0 queued, 1 done, 1 failed; videos: 1 waiting for files, 1 failed$/m);
    expect(text).toMatch(/^ {6}upload #\d+ to alo: last error: ALO answered 400: file exceeds max_upload_size_mb$/m);
    expect(text).toContain('  /exports/broken/incident.json: videos[1].id: Required');
    expect(text).not.toContain('[#');
  });

  it('shows the uploads of a paused camera as paused, and the camera', async () => {
    await busyIncident();
    pauseCamera('cam-01a', NOW);
    const text = formatStatus(status());
    expect(tableCells(text).rows.get('big')).toMatchObject({ STATE: 'paused' });
    expect(tableCells(text).rows.get('small')).toMatchObject({ STATE: 'done' });
    expect(text).toMatch(/^ {2}cam-01a "192\.168\.0\.241 - Camera - 01a" paused since .*: 1 video\(s\) waiting$/m);
  });
});

describe('formatDuration', () => {
  it('writes m:ss under an hour, h:mm:ss above, -- when unknown', async () => {
    expect([0, 5, 65, 599.2, 3599, 3600, 3723, 100 * 3600].map(formatDuration)).toEqual([
      '0:00',
      '0:05',
      '1:05',
      '10:00',
      '59:59',
      '1:00:00',
      '1:02:03',
      '100:00:00',
    ]);
    expect(formatDuration(null)).toBe('--');
  });
});

describe('formatSummary: what status prints by default, of bounded size', () => {
  /** An incident whose one small video is done, last touched `minutesAgo` before now. */
  async function doneIncident(id: string, minutesAgo: number): Promise<void> {
    await applyIncident(id, [{ id: `v-${id}`, file: 'v.mp4' }]);
    const u = readyVideo(id, `v-${id}`, partsOf(1, 1024));
    await b.completed(u, { s3_key: `k/${id}.mp4` });
    b.sql.prepare('UPDATE uploads SET updated_at = ? WHERE id = ?').run(NOW - minutesAgo * 60 * SECOND, u);
    b.sql.prepare('UPDATE incidents SET updated_at = ? WHERE id = ?').run(NOW - minutesAgo * 60 * SECOND, id);
  }

  it('shows the totals per target, the oldest waiting export, and every incident while the ledger is small', async () => {
    await busyIncident();
    const text = formatSummary(ledger.status.summary({ now: NOW }), DAEMON);
    expect(text).toMatch(/^uploads: 1 uploading, 0 queued, 1 done, 1 failed; videos: 1 waiting for files, 1 failed$/m);
    expect(text).toMatch(
      /^oldest waiting export: \S+ of incident 8d1635ed-f747-427c-9b35-d83a08d08ab5, (waiting for its file|queued) since /m,
    );
    // The incident as --all shows it: its rows, the failure's reason, the failed export's error.
    expect(text.replace(/\n\noldest waiting export: .*$/m, '')).toBe(formatStatus(status(), DAEMON));
    expect(text).toContain('upload #3 to alo: last error: ALO answered 400: file exceeds max_upload_size_mb');
    expect(text).not.toContain('incidents shown');
  });

  it('on a large ledger shows the uploads under way and the latest failures first, then the most recently active, and says how many it left out', async () => {
    for (let i = 0; i < 40; i++) await doneIncident(`done-${String(i).padStart(2, '0')}`, 1000 - i);
    await busyIncident();
    b.sql
      .prepare('UPDATE uploads SET updated_at = ? WHERE incident_id = ?')
      .run(NOW - 5000 * 60 * SECOND, '8d1635ed-f747-427c-9b35-d83a08d08ab5');
    b.sql.prepare('UPDATE incidents SET updated_at = ? WHERE id = ?').run(NOW - 5000 * 60 * SECOND, '8d1635ed-f747-427c-9b35-d83a08d08ab5');
    await applyIncident('refused-one', [{ id: 'r', errors: ['export failed'] }]);
    b.sql
      .prepare(
        "INSERT INTO reports (incident_id, target, wanted, refused, refused_at, last_error) VALUES ('refused-one', 'alo', 1, 1, ?, 'ALO answered 400') ON CONFLICT DO UPDATE SET refused = 1, refused_at = excluded.refused_at, last_error = excluded.last_error",
      )
      .run(NOW - 9000 * 60 * SECOND);
    b.sql.prepare("UPDATE videos SET updated_at = ? WHERE incident_id = 'refused-one'").run(NOW - 9000 * 60 * SECOND);
    b.sql.prepare("UPDATE incidents SET updated_at = ? WHERE id = 'refused-one'").run(NOW - 9000 * 60 * SECOND);

    const summary = ledger.status.summary({ now: NOW });
    expect(summary.incidentCount).toBe(42);
    expect(summary.byTarget).toEqual([{ target: 'alo', uploading: 1, queued: 0, done: 41, failed: 1 }]);
    const shown = summary.incidents.map((i) => i.id);
    expect(shown).toHaveLength(20);
    // Under way and failed, though older than every done incident; then the 18 most recent.
    expect(shown).toContain('8d1635ed-f747-427c-9b35-d83a08d08ab5');
    expect(shown).toContain('refused-one');
    expect(shown.filter((id) => id.startsWith('done-')).sort()).toEqual(Array.from({ length: 18 }, (_, i) => `done-${22 + i}`));
    const text = formatSummary(summary, DAEMON);
    expect(text).toMatch(/^ {2}report to alo: FAILED: refused by the platform: ALO answered 400 /m);
    expect(text).toMatch(
      /^20 of 42 incidents shown \(under way, latest failures, most recent\); vms-uplink status --all lists every one$/m,
    );
    expect(text).not.toContain('done-21');
  });
});
