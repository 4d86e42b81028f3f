/** Manifests as a VMS writes them (CONTRACT §3), for tests and the demo. */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { VideoRef } from '../conformance/platform-fixture.js';
import { writeVideo } from './files.js';

export interface TestVideo {
  id: string;
  file?: string;
  thumbnail?: string;
  camera_id?: string;
  camera_name?: string;
  started_at?: string;
  ended_at?: string;
  errors?: string[];
}

/** What every test incident says besides its id and title. */
export const INCIDENT_DETAILS = {
  description: 'written by the test suite',
  incident_at: '2024-02-02T11:04:12.987Z',
  created_at: '2024-02-02T11:04:41.030Z',
  updated_at: '2024-02-02T12:01:19.643Z',
  latitude: 51.5,
  longitude: -0.12,
};

/** The camera and time span of the manifest's video at `index` (from 0), where the test sets none. */
export function videoDefaults(index: number) {
  return {
    camera_id: `cam-${index + 1}`,
    camera_name: `192.168.0.${240 + index} - Camera - 0${index + 1}`,
    camera_description: '',
    camera_latitude: 0,
    camera_longitude: 0,
    started_at: '2024-02-02T11:49:22Z',
    ended_at: '2024-02-02T11:51:32Z',
  };
}

export function incidentManifest(id: string, videos: TestVideo[], title = 'Test incident'): Record<string, unknown> {
  return {
    incident: { id, title, ...INCIDENT_DETAILS },
    videos: videos.map((v, i) => ({ ...videoDefaults(i), ...v })),
  };
}

/** Writes the manifest the way exporters do: a temp name, then a rename. */
export async function writeManifest(folder: string, manifest: unknown, name = 'incident.json'): Promise<string> {
  await mkdir(folder, { recursive: true });
  const path = join(folder, name);
  const tmp = `${path}.tmp`;
  await writeFile(tmp, JSON.stringify(manifest, null, 2));
  await rename(tmp, path);
  return path;
}

/** A video of the manifest and, when it has a file, the size (and first bytes) of the file written for it. */
export type ExportedVideo = TestVideo & { size?: number; header?: Buffer };

export interface IncidentOptions {
  title?: string;
  /** The incident's folder under the export root. Default: its id. */
  folder?: string;
}

/**
 * Exports an incident as a VMS does: the video files first, then the manifest. Returns the
 * SHA-256 of each video file written, by video id.
 */
export async function writeIncident(
  exportsRoot: string,
  id: string,
  videos: ExportedVideo[],
  options: IncidentOptions = {},
): Promise<Map<string, string>> {
  const folder = join(exportsRoot, options.folder ?? id);
  const shas = new Map<string, string>();
  for (const { id: videoId, file, size, header } of videos) {
    if (file !== undefined && size !== undefined) shas.set(videoId, await writeVideo(join(folder, file), size, header));
  }
  await writeManifest(
    folder,
    incidentManifest(
      id,
      videos.map(({ size: _size, header: _header, ...v }) => v),
      options.title,
    ),
  );
  return shas;
}

/** Exports an incident of one video, `<id>-v1` in cam01.mp4; returns the file's SHA-256. */
export async function writeOneVideoIncident(exportsRoot: string, id: string, size: number, options: IncidentOptions = {}): Promise<string> {
  const videoId = `${id}-v1`;
  const shas = await writeIncident(exportsRoot, id, [{ id: videoId, file: 'cam01.mp4', size }], options);
  return shas.get(videoId)!;
}

/** A video of an exported incident, as the platform fixtures recognise it, with its SHA-256. */
export type ExportedVideoRef = VideoRef & { sha256: string };

/**
 * Exports an incident of fresh videos, one per size (`v1`… in `cam01_<n>.mp4`…, cameras from
 * videoDefaults), and returns them with their SHA-256.
 */
export async function exportVideos(
  exportsRoot: string,
  incident: { id: string; title: string; folder?: string },
  sizes: number[],
  fileName: (index: number) => string = (i) => `cam0${i + 1}.mp4`,
): Promise<ExportedVideoRef[]> {
  const videos = sizes.map((size, i) => ({
    id: `${incident.id}-v${i + 1}`,
    incidentId: incident.id,
    incidentTitle: incident.title,
    file: fileName(i),
    cameraName: videoDefaults(i).camera_name,
    size,
  }));
  const options: IncidentOptions = { title: incident.title, ...(incident.folder ? { folder: incident.folder } : {}) };
  const shas = await writeIncident(
    exportsRoot,
    incident.id,
    videos.map(({ id, file, size }) => ({ id, file, size })),
    options,
  );
  return videos.map((v) => ({ ...v, sha256: shas.get(v.id)! }));
}
