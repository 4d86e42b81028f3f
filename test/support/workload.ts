/**
 * A whole site under load, for the crash loop and the soak: the four platform emulators (on one
 * S3 store), a daemon config that routes each incident folder `<platform>/<id>` to its platform,
 * incidents exported as a VMS does, and the promise checked at the end: every export arrived once,
 * byte-identical, every incident reported, and no more bytes sent again than the kills explain.
 */
import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { aionvisionFixture } from '../conformance/fixtures/aionvision.js';
import { aloFixture } from '../conformance/fixtures/alo.js';
import { truvideoFixture } from '../conformance/fixtures/truvideo.js';
import { valtFixture } from '../conformance/fixtures/valt.js';
import type { PlatformFixture, PlatformSite } from '../conformance/platform-fixture.js';
import { startS3Store, type S3Store } from '../emulators/s3-store.js';
import { DaemonProcess } from './daemon-process.js';
import { ledgerRowsSoFar } from './ledger.js';
import { exportVideos, type ExportedVideoRef } from './manifest.js';
import { writeSiteConfig, type SiteFiles } from './site.js';

export const PLATFORMS: readonly PlatformFixture[] = [aloFixture, aionvisionFixture, truvideoFixture, valtFixture];

/** Below this a file holds no recognisable container: the daemon fails it as not a video (or empty). */
const SNIFFABLE_BYTES = 32;

export interface WorkloadVideo extends ExportedVideoRef {
  platform: string;
  /** What the daemon must make of it: tiny files are failed exports, the rest arrive. */
  outcome: 'uploaded' | 'failed';
  /** Its export folder was deleted once it was settled (the soak keeps the disk bounded). */
  removed?: boolean;
}

export interface Resent {
  /** Bytes the platforms accepted beyond one copy of each part. */
  bytes: number;
  parts: number;
}

export class Workload {
  readonly videos: WorkloadVideo[] = [];
  private readonly final = new Set<WorkloadVideo>();
  private incidents = 0;

  private constructor(
    readonly files: SiteFiles,
    readonly store: S3Store,
    readonly sites: ReadonlyMap<string, PlatformSite>,
  ) {}

  /** Starts the emulators and writes the daemon's config into `dir`. */
  static async start(dir: string, upload: Record<string, unknown> = {}): Promise<Workload> {
    const store = await startS3Store();
    const sites = new Map<string, PlatformSite>();
    for (const fixture of PLATFORMS) sites.set(fixture.type, await fixture.start(store));
    const files = await writeSiteConfig(dir, {
      targets: Object.fromEntries([...sites].map(([type, site]) => [type, site.targetConfig])),
      sections: { routes: PLATFORMS.map((p) => ({ match: `${p.type}/**`, targets: [p.type] })) },
      upload: { concurrency: 4, part_size: '8MiB', ...upload },
      log: { level: 'info' },
    });
    return new Workload(files, store, sites);
  }

  daemon(): DaemonProcess {
    return DaemonProcess.run(this.files.configPath);
  }

  /** Exports one incident for `platform` with a video of each size (files first, then the manifest). */
  async exportIncident(platform: string, sizes: number[]): Promise<WorkloadVideo[]> {
    const n = ++this.incidents;
    const id = `load-${process.pid}-${n}`;
    const refs = await exportVideos(
      this.files.exportsRoot,
      { id, title: `Load ${n}`, folder: join(platform, id) },
      sizes,
      (i) => `cam${i + 1}_${n}.mp4`,
    );
    const videos = refs.map((v) => ({ ...v, platform, outcome: v.size < SNIFFABLE_BYTES ? ('failed' as const) : ('uploaded' as const) }));
    this.videos.push(...videos);
    return videos;
  }

  /** Deletes an incident's export folder (what `after_upload: delete` will do), keeping the disk bounded. */
  async removeExport(video: WorkloadVideo): Promise<void> {
    await rm(join(this.files.exportsRoot, video.platform, video.incidentId), { recursive: true, force: true });
  }

  /** Whether the video reached its final state: on its platform intact, or failed in the ledger. */
  async isFinal(video: WorkloadVideo): Promise<boolean> {
    // A final state does not change; remembering it spares hashing the stored object on every poll.
    if (this.final.has(video)) return true;
    const final =
      video.outcome === 'failed'
        ? this.failedInLedger(video)
        : (await this.sites.get(video.platform)!.received(video))?.sha256 === video.sha256;
    if (final) this.final.add(video);
    return final;
  }

  /** Final on the platform and in the ledger: the daemon will not read its file again. */
  async isSettled(video: WorkloadVideo): Promise<boolean> {
    if (!(await this.isFinal(video))) return false;
    if (video.outcome === 'failed') return true;
    const uploads = ledgerRowsSoFar<{ state: string }>(
      this.files.ledgerPath,
      `SELECT state FROM uploads WHERE incident_id = ? AND video_id = ?`,
      video.incidentId,
      video.id,
    );
    return uploads.length > 0 && uploads.every((u) => u.state === 'done');
  }

  /** Every broken promise, as a line; empty when all is well. */
  async problems(): Promise<string[]> {
    const problems: string[] = [];
    for (const video of this.videos) {
      const site = this.sites.get(video.platform)!;
      const where = `${video.platform} ${video.id} (${video.size} B)`;
      if (video.outcome === 'failed') {
        if (!this.failedInLedger(video)) problems.push(`${where}: not failed in the ledger`);
        continue;
      }
      const received = await site.received(video);
      if (received?.sha256 !== video.sha256) problems.push(`${where}: ${received ? 'content differs' : 'not received'}`);
      const copies = site.completions(video);
      if (copies !== 1) problems.push(`${where}: completed ${copies} times`);
    }
    problems.push(...this.aloReportProblems());
    return problems;
  }

  /** Bytes accepted more than once, per part, by the platforms (the ledger says how big each part is). */
  resent(): Resent {
    const total: Resent = { bytes: 0, parts: 0 };
    for (const video of this.videos.filter((v) => v.outcome === 'uploaded')) {
      const sizes = new Map(
        ledgerRowsSoFar<{ number: number; size: number }>(
          this.files.ledgerPath,
          `SELECT p.number, p.size FROM parts p JOIN uploads u ON u.id = p.upload_id WHERE u.incident_id = ? AND u.video_id = ? AND u.role = 'video'`,
          video.incidentId,
          video.id,
        ).map((p) => [p.number, p.size]),
      );
      for (const [number, count] of this.sites.get(video.platform)!.acceptedParts(video)) {
        if (count <= 1) continue;
        total.parts += count - 1;
        total.bytes += (count - 1) * (sizes.get(number) ?? 0);
      }
    }
    return total;
  }

  /** The largest part any upload has: the unit of the re-send allowance. */
  largestPart(): number {
    const [row] = ledgerRowsSoFar<{ size: number | null }>(this.files.ledgerPath, `SELECT MAX(size) AS size FROM parts`);
    return row?.size ?? 0;
  }

  /** `PRAGMA integrity_check` of the ledger as the daemon left it ('ok' too when a kill came before it made one). */
  integrity(): string {
    if (!existsSync(this.files.ledgerPath)) return 'ok';
    const db = new Database(this.files.ledgerPath);
    try {
      return (db.pragma('integrity_check') as Array<{ integrity_check: string }>).map((r) => r.integrity_check).join('; ');
    } finally {
      db.close();
    }
  }

  async close(): Promise<void> {
    for (const site of this.sites.values()) await site.close();
    await this.store.close();
  }

  private failedInLedger(video: WorkloadVideo): boolean {
    const rows = ledgerRowsSoFar<{ state: string }>(
      this.files.ledgerPath,
      `SELECT state FROM videos WHERE incident_id = ? AND id = ?`,
      video.incidentId,
      video.id,
    );
    return rows[0]?.state === 'failed';
  }

  /** ALO's incident reports: each lists every video once, as uploaded or failed, as it ended. */
  private aloReportProblems(): string[] {
    const problems: string[] = [];
    const byIncident = new Map<string, WorkloadVideo[]>();
    for (const v of this.videos.filter((v) => v.platform === 'alo'))
      byIncident.set(v.incidentId, [...(byIncident.get(v.incidentId) ?? []), v]);
    for (const [incidentId, videos] of byIncident) {
      const report = this.sites.get('alo')!.incidentReport?.(incidentId);
      const uploaded = new Set(report?.uploaded ?? []);
      const failed = new Set(report?.failed ?? []);
      for (const v of videos) {
        const listed = v.outcome === 'uploaded' ? uploaded.has(v.id) && !failed.has(v.id) : failed.has(v.id) && !uploaded.has(v.id);
        if (!listed) problems.push(`alo incident ${incidentId}: ${v.id} not reported as ${v.outcome}`);
      }
      if (uploaded.size + failed.size !== videos.length)
        problems.push(`alo incident ${incidentId}: reports ${uploaded.size + failed.size} videos, exported ${videos.length}`);
    }
    return problems;
  }
}
