/**
 * The cameras the local API shows, read back from a real ledger filled the way the daemon fills
 * it: names, backlog, latency, transmit rate, online-ness, upload metrics and the queue figures.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { MiB } from '../support/files.js';
import { LedgerBuilder, partsOf } from '../support/ledger-builder.js';

const NOW = Date.UTC(2026, 10, 23, 12, 0, 0);
const SECOND = 1000;

let b: LedgerBuilder;
beforeEach(async () => {
  b = await LedgerBuilder.create();
});
afterEach(() => b.close());

/** Sets a video's settled_at and its uploads' start and completion, in seconds before NOW. */
function timesAgo(videoId: string, t: { settled?: number; started?: number; completed?: number }): void {
  const db = b.sql;
  if (t.settled !== undefined) db.prepare('UPDATE videos SET settled_at = ? WHERE id = ?').run(NOW - t.settled * SECOND, videoId);
  if (t.started !== undefined) db.prepare('UPDATE uploads SET started_at = ? WHERE video_id = ?').run(NOW - t.started * SECOND, videoId);
  if (t.completed !== undefined)
    db.prepare('UPDATE uploads SET completed_at = ? WHERE video_id = ?').run(NOW - t.completed * SECOND, videoId);
}

async function completed(videoId: string, uploadId: number): Promise<void> {
  b.partsDoneAgo(uploadId, NOW, { 1: 600 * SECOND });
  await b.completed(uploadId, { s3_key: `k/${videoId}` });
}

describe('readCameras', () => {
  it('folds every video of a camera into one entry, with the seed field names', async () => {
    await b.applyIncident('inc-1', [
      { id: 'old', file: 'old.mp4', camera_name: 'Gate', ended_at: '2024-02-02T12:51:32+01:00' },
      { id: 'new', file: 'new.mp4', camera_name: 'Gate (north)', started_at: '2024-02-01T08:00:00Z' },
      { id: 'lost', errors: ['No video available'] },
      { id: 'waiting', file: 'waiting.mp4', camera_name: 'Gate (north)' },
      { id: 'other', file: 'other.mp4', camera_id: 'cam-2', camera_name: 'Dock' },
      { id: 'nobody', file: 'nobody.mp4', camera_id: undefined },
    ]);
    await completed('old', b.readyVideo('inc-1', 'old', partsOf(1, MiB)));
    timesAgo('old', { settled: 300, started: 290, completed: 280 });
    b.readyVideo('inc-1', 'new', partsOf(2, MiB));

    const cameras = b.ledger.cameras.cameras(undefined, NOW);
    expect(cameras.map((c) => c.id)).toEqual(['cam-1', 'cam-2']);
    expect(cameras[0]).toEqual({
      id: 'cam-1',
      name: 'Gate (north)',
      state: 'running',
      // The latest recorded time, whatever its offset, in UTC.
      lastVideoAt: '2024-02-02T11:51:32.000Z',
      lastSeenAt: expect.any(String),
      // "new" is queued and "waiting" waits for its file; "lost" failed and "old" is done.
      videoBacklog: 2,
      videoUploadLatency: 20,
      networkTransmitRate: 0,
      isOnline: true,
    });
    expect(b.ledger.cameras.cameras('cam-2', NOW)).toEqual([
      expect.objectContaining({ id: 'cam-2', name: 'Dock', videoBacklog: 1, videoUploadLatency: null }),
    ]);
    expect(b.ledger.cameras.cameras('nobody', NOW)).toEqual([]);
  });

  it('counts the bytes of the last minute in networkTransmitRate, and is online while they flow despite a retried error', async () => {
    await b.applyIncident('inc-1', [{ id: 'v', file: 'v.mp4' }]);
    const id = b.readyVideo('inc-1', 'v', partsOf(4, 3 * MiB));
    b.partsDoneAgo(id, NOW, { 1: 90 * SECOND, 2: 30 * SECOND, 3: 10 * SECOND });
    b.ledger.uploads.trouble(id, 'part 4: HTTP 503');
    expect(b.ledger.cameras.cameras('cam-1', NOW)[0]).toMatchObject({ networkTransmitRate: Math.round((6 * MiB) / 60), isOnline: true });
    // A minute later nothing has moved: the error makes it offline.
    expect(b.ledger.cameras.cameras('cam-1', NOW + 60 * SECOND)[0]).toMatchObject({ networkTransmitRate: 0, isOnline: false });
  });

  it('is offline with a failed upload, and shows the pause recorded in the ledger', async () => {
    await b.applyIncident('inc-1', [{ id: 'v', file: 'v.mp4' }]);
    b.ledger.uploads.failed(b.readyVideo('inc-1', 'v', partsOf(1, MiB)), 'ALO answered 413');
    expect(b.ledger.operator.setCameraState('cam-1', 'paused')).toBe(true);
    expect(b.ledger.operator.setCameraState('cam-unknown', 'paused')).toBe(false);
    expect(b.ledger.cameras.cameras('cam-1', NOW)[0]).toMatchObject({ state: 'paused', isOnline: false, videoBacklog: 0 });
    expect(b.sql.prepare(`SELECT id, state FROM cameras`).all()).toEqual([{ id: 'cam-1', state: 'paused' }]);
  });
});

describe('readUploadMetrics', () => {
  it('sums the completed uploads, not content another upload had already sent', async () => {
    await b.applyIncident('inc-1', [
      { id: 'a', file: 'a.mp4' },
      { id: 'same', file: 'same.mp4' },
      { id: 'open', file: 'open.mp4' },
    ]);
    await completed('a', b.readyVideo('inc-1', 'a', partsOf(2, MiB), 2 * MiB, 'sha-shared'));
    timesAgo('a', { started: 100, completed: 40 });
    // The same content to the same target is done at once, nothing sent.
    b.readyVideo('inc-1', 'same', partsOf(2, MiB), 2 * MiB, 'sha-shared');
    b.partsDoneAgo(b.readyVideo('inc-1', 'open', partsOf(2, MiB)), NOW, { 1: SECOND });
    expect(b.ledger.cameras.uploadMetrics('cam-1')).toEqual({ uploadSize: 2 * MiB, uploadTime: 60 });
    expect(b.ledger.cameras.uploadMetrics('cam-none')).toEqual({ uploadSize: 0, uploadTime: 0 });
  });
});

describe('the queue figures', () => {
  it('counts queued uploads per target and ages the oldest export not yet uploaded', async () => {
    await b.applyIncident('inc-1', [
      { id: 'a', file: 'a.mp4' },
      { id: 'b', file: 'b.mp4' },
      { id: 'w', file: 'w.mp4' },
    ]);
    await completed('a', b.readyVideo('inc-1', 'a', partsOf(1, MiB)));
    b.readyVideo('inc-1', 'b', partsOf(1, MiB));
    const seen = (id: string, secondsAgo: number) =>
      b.sql.prepare('UPDATE videos SET first_seen_at = ? WHERE id = ?').run(NOW - secondsAgo * SECOND, id);
    seen('a', 900);
    seen('b', 120);
    seen('w', 60);
    expect(b.ledger.figures.queuedByTarget()).toEqual(new Map([['alo', 1]]));
    expect(b.ledger.figures.oldestQueuedSeconds(NOW)).toBe(120);
  });
});
