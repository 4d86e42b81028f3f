/**
 * A real ledger file filled through the ledger's own stages, as the daemon would, for unit tests
 * of what is read back from it (`status`, the local API's cameras).
 */
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Ledger } from '../../src/ledger/ledger.js';
import type { PartSlice } from '../../src/plan/part-plan.js';
import type { Manifest } from '../../src/watch/manifest.js';
import { tempDir } from './files.js';

/** `count` parts of `size` bytes each. */
export function partsOf(count: number, size: number): PartSlice[] {
  return Array.from({ length: count }, (_, i) => ({ number: i + 1, offset: i * size, size }));
}

export class LedgerBuilder {
  private constructor(
    readonly ledger: Ledger,
    /** A second connection to the same file, for what the daemon writes but the stages do not expose (times, in tests). */
    readonly sql: Database.Database,
    private readonly cleanup: () => Promise<void>,
  ) {}

  /** A fresh ledger in a temp folder, with `alo` as its one (reporting) target. */
  static async create(): Promise<LedgerBuilder> {
    const dir = await tempDir();
    const path = join(dir.path, 'ledger.db');
    const ledger = Ledger.open(path, { reportingTargets: ['alo'] });
    return new LedgerBuilder(ledger, new Database(path), dir.cleanup);
  }

  async close(): Promise<void> {
    this.sql.close();
    this.ledger.close();
    await this.cleanup();
  }

  /** Applies a manifest for `incidentId` with these videos, all on camera `cam-1` unless they say otherwise. */
  async applyIncident(incidentId: string, videos: Manifest['videos'], title = 'Break-in'): Promise<void> {
    const manifest: Manifest = {
      incident: { id: incidentId, title },
      videos: videos.map((v) => ({ camera_id: 'cam-1', camera_name: 'Gate', ...v })),
    };
    const sha = `sha-${JSON.stringify(manifest)}`;
    await this.ledger.watch.applyManifest(`/exports/${incidentId}/incident.json`, `/exports/${incidentId}`, sha, sha, manifest, ['alo']);
  }

  /** Makes the video's file ready with these parts to alo; returns the upload's number. */
  readyVideo(
    incidentId: string,
    videoId: string,
    parts: PartSlice[] | null,
    size = (parts ?? []).reduce((n, p) => n + p.size, 0),
    sha256 = `sha-${incidentId}-${videoId}`,
  ): number {
    const file = {
      role: 'video' as const,
      path: `/exports/${incidentId}/${videoId}.mp4`,
      size,
      mtimeMs: 1,
      stamp: `${size}:1`,
      sha256,
      contentType: 'video/mp4',
    };
    this.ledger.plan.videosReady([{ incidentId, videoId, files: [file], plans: [{ target: 'alo', role: 'video', parts }], notes: [] }]);
    return (this.sql.prepare('SELECT id FROM uploads WHERE incident_id = ? AND video_id = ?').get(incidentId, videoId) as { id: number })
      .id;
  }

  /** Marks parts done as the daemon does, then sets when: `msAgo` before `now`. */
  partsDoneAgo(uploadId: number, now: number, msAgo: Record<number, number>): void {
    this.ledger.uploads.started(uploadId, { mode: 'multipart', upload_id: `remote-${uploadId}` });
    for (const [number, ago] of Object.entries(msAgo)) {
      this.ledger.uploads.partDone(uploadId, { number: Number(number), etag: `etag-${number}`, md5: `md5-${number}` });
      this.sql.prepare('UPDATE parts SET done_at = ? WHERE upload_id = ? AND number = ?').run(now - ago, uploadId, Number(number));
    }
  }

  /** Completes the upload as the daemon does when the platform did. */
  async completed(uploadId: number, result: Record<string, string>): Promise<void> {
    await this.ledger.uploads.done(uploadId, { result, sha256: `sha-${uploadId}`, session: {}, parts: [], startedAt: Date.now() });
  }
}
