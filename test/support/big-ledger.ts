/**
 * A large ledger, filled through the ledger's own stages as the daemon would have filled it:
 * manifests applied, videos hashed and planned, uploads completed (one in fifty refused), reports
 * acknowledged. Each incident has two videos on two of the cameras, every tenth a failed export.
 * The stages stamp everything with the moment of the fill, as if 20,000 videos had been sent in
 * the last minute; so the times are then spread as a year of work leaves them (an incident every
 * `spacingMs`, the last one now), and the incidents finished with are marked so, as the daemon
 * marks them. For measuring what reads it (the status page, `status`) at a size a site reaches.
 */
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Ledger } from '../../src/ledger/ledger.js';
import type { ReadyVideo } from '../../src/ledger/plan-ledger.js';
import type { Manifest } from '../../src/watch/manifest.js';

const BATCH = 500;

export interface BigLedger {
  incidents: number;
  cameras: number;
  /** Time between two incidents' exports; default 30 minutes. */
  spacingMs?: number;
}

/** Incident ids sort as they were applied: `inc-00000`, `inc-00001`… */
export const bigIncidentId = (i: number): string => `inc-${String(i).padStart(5, '0')}`;

function manifestOf(i: number, cameras: number): Manifest {
  const camera = (n: number): { camera_id: string; camera_name: string } => ({
    camera_id: `cam-${(i + n) % cameras}`,
    camera_name: `Camera ${(i + n) % cameras}`,
  });
  return {
    incident: { id: bigIncidentId(i), title: `Incident number ${i}` },
    videos: [
      { id: 'v1', file: 'v1.mp4', ...camera(0) },
      { id: 'v2', file: 'v2.mp4', ...camera(1) },
      ...(i % 10 === 0 ? [{ id: 'v3', ...camera(2), errors: ['G64 export failed with: No video available for the camera.'] }] : []),
    ],
  };
}

function readyVideos(exportsRoot: string, i: number): ReadyVideo[] {
  return ['v1', 'v2'].map((videoId) => {
    const size = 1_000_000 + i;
    return {
      incidentId: bigIncidentId(i),
      videoId,
      files: [
        {
          role: 'video',
          path: join(exportsRoot, bigIncidentId(i), `${videoId}.mp4`),
          size,
          mtimeMs: 1,
          stamp: `${size}:1`,
          sha256: `sha-${i}-${videoId}`,
          contentType: 'video/mp4',
        },
      ],
      plans: [{ target: 'alo', role: 'video', parts: null }],
      notes: [],
    };
  });
}

/** Fills the ledger at `path` (its incidents in folders under `exportsRoot`, which need not exist). */
export async function fillLedger(path: string, exportsRoot: string, size: BigLedger): Promise<void> {
  const ledger = Ledger.open(path, { reportingTargets: ['alo'] });
  try {
    for (let from = 0; from < size.incidents; from += BATCH) {
      const batch = Array.from({ length: Math.min(BATCH, size.incidents - from) }, (_, k) => from + k);
      // Group commits: the manifests of a batch share transactions, as the watcher's do.
      await Promise.all(
        batch.map((i) => {
          const folder = join(exportsRoot, bigIncidentId(i));
          return ledger.watch.applyManifest(join(folder, 'incident.json'), folder, `sha-${i}`, `stamp-${i}`, manifestOf(i, size.cameras), [
            'alo',
          ]);
        }),
      );
      ledger.plan.videosReady(batch.flatMap((i) => readyVideos(exportsRoot, i)));
    }
    const read = new Database(path, { readonly: true });
    const queued = read.prepare(`SELECT id FROM uploads WHERE state = 'queued' ORDER BY id`).all() as Array<{ id: number }>;
    read.close();
    for (let from = 0; from < queued.length; from += BATCH) {
      const batch = queued.slice(from, from + BATCH);
      for (const { id } of batch) if (id % 50 === 0) ledger.uploads.failed(id, `ALO (alo) answered 422: upload #${id} refused`);
      await Promise.all(
        batch
          .filter(({ id }) => id % 50 !== 0)
          .map(({ id }) =>
            ledger.uploads.done(id, {
              result: { s3_key: `key-${id}` },
              sha256: `sha-${id}`,
              session: {},
              parts: [],
              startedAt: Date.now(),
            }),
          ),
      );
    }
    for (let due = ledger.reports.due(null, BATCH); due.length > 0; due = ledger.reports.due(due.at(-1)!, BATCH)) {
      await Promise.all(due.map((r) => ledger.reports.acked(r.incidentId, r.target, r.wanted)));
    }
  } finally {
    ledger.close();
  }
  spreadTimes(path, size);
  // Incidents every target finished with long ago are marked so, as the daemon marks them (their folders unwatched).
  const after = Ledger.open(path, { reportingTargets: ['alo'] });
  try {
    while (after.watch.finishIncidents(Date.now() - 3_600_000, false, BATCH).length > 0);
  } finally {
    after.close();
  }
}

/**
 * Incident i was exported `(incidents - 1 - i) × spacing` ago; its videos settled 10 s later, its
 * uploads started 5 s after that and completed a minute later, its report was acknowledged then.
 * A second connection, as test/support/ledger-builder.ts sets times the stages do not expose.
 */
function spreadTimes(path: string, size: BigLedger): void {
  const db = new Database(path);
  try {
    // The incident's number is in its id (inc-00042): its time follows from it.
    const at = (idColumn: string): string => `(@now - (@last - CAST(substr(${idColumn}, 5) AS INTEGER)) * @spacing)`;
    const params = { now: Date.now(), last: size.incidents - 1, spacing: size.spacingMs ?? 30 * 60_000 };
    db.transaction(() => {
      db.prepare(`UPDATE incidents SET created_at = ${at('id')}, updated_at = ${at('id')}`).run(params);
      const t = at('incident_id');
      db.prepare(`UPDATE videos SET first_seen_at = ${t}, settled_at = ${t} + 10000, updated_at = ${t} + 10000`).run(params);
      db.prepare(
        `UPDATE uploads SET created_at = ${t} + 10000, started_at = ${t} + 15000, updated_at = ${t} + 75000,
                completed_at = CASE WHEN state = 'done' THEN ${t} + 75000 END`,
      ).run(params);
      db.prepare(`UPDATE reports SET acked_at = ${t} + 80000`).run(params);
    })();
  } finally {
    db.close();
  }
}
