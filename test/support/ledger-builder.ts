/**
 * A real ledger file filled through UploadLedger's own methods, as the daemon would, for unit
 * tests of what is read back from it (`status`, the local API's cameras).
 */
import { join } from 'node:path';
import { UploadLedger, type PlannedPart } from '../../src/ledger/upload-ledger.js';
import type { Manifest } from '../../src/watch/manifest.js';
import { tempDir } from './files.js';

/** `count` parts of `size` bytes each. */
export function partsOf(count: number, size: number): PlannedPart[] {
  return Array.from({ length: count }, (_, i) => ({ number: i + 1, offset: i * size, size, md5: String(i).repeat(32).slice(0, 32) }));
}

export class LedgerBuilder {
  private constructor(
    readonly ledger: UploadLedger,
    private readonly cleanup: () => Promise<void>,
  ) {}

  /** A fresh ledger in a temp folder, with `alo` as its one (reporting) target. */
  static async create(): Promise<LedgerBuilder> {
    const dir = await tempDir();
    return new LedgerBuilder(UploadLedger.open(join(dir.path, 'ledger.db'), ['alo']), dir.cleanup);
  }

  async close(): Promise<void> {
    this.ledger.close();
    await this.cleanup();
  }

  /** Applies a manifest for `incidentId` with these videos, all on camera `cam-1` unless they say otherwise. */
  applyIncident(incidentId: string, videos: Manifest['videos'], title = 'Break-in'): void {
    const manifest: Manifest = { incident: { id: incidentId, title }, videos: videos.map((v) => ({ camera_id: 'cam-1', camera_name: 'Gate', ...v })) };
    this.ledger.applyManifest(`/exports/${incidentId}/incident.json`, `/exports/${incidentId}`, `sha-${JSON.stringify(manifest)}`, manifest, ['alo']);
  }

  /** Makes the video's file ready with these parts to alo; returns the upload's number. */
  readyVideo(incidentId: string, videoId: string, parts: PlannedPart[] | null, size = (parts ?? []).reduce((n, p) => n + p.size, 0), sha256 = `sha-${incidentId}-${videoId}`): number {
    const file = { role: 'video' as const, path: `/exports/${incidentId}/${videoId}.mp4`, size, mtimeMs: 1, sha256, contentType: 'video/mp4' };
    this.ledger.videoReady(incidentId, videoId, [file], [{ target: 'alo', role: 'video', parts }]);
    return (this.ledger.db.prepare('SELECT id FROM uploads WHERE incident_id = ? AND video_id = ?').get(incidentId, videoId) as { id: number }).id;
  }

  /** Marks parts done as the daemon does, then sets when: `msAgo` before `now`. */
  partsDoneAgo(uploadId: number, now: number, msAgo: Record<number, number>): void {
    this.ledger.uploadStarted(uploadId, { mode: 'multipart', upload_id: `remote-${uploadId}` });
    for (const [number, ago] of Object.entries(msAgo)) {
      this.ledger.partDone(uploadId, Number(number), `etag-${number}`);
      this.ledger.db.prepare('UPDATE parts SET done_at = ? WHERE upload_id = ? AND number = ?').run(now - ago, uploadId, Number(number));
    }
  }
}
