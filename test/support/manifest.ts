/** Manifests as a VMS writes them (CONTRACT §3), for tests and the demo. */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from "node:path";

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

export function incidentManifest(id: string, videos: TestVideo[], title = 'Test incident'): Record<string, unknown> {
  return {
    incident: {
      id,
      title,
      description: 'written by the test suite',
      incident_at: '2024-02-02T11:04:12.987Z',
      created_at: '2024-02-02T11:04:41.030Z',
      updated_at: '2024-02-02T12:01:19.643Z',
      latitude: 51.5,
      longitude: -0.12,
    },
    videos: videos.map((v, i) => ({
      camera_id: `cam-${i + 1}`,
      camera_name: `192.168.0.${240 + i} - Camera - 0${i + 1}`,
      camera_description: '',
      camera_latitude: 0,
      camera_longitude: 0,
      started_at: '2024-02-02T11:49:22Z',
      ended_at: '2024-02-02T11:51:32Z',
      ...v,
    })),
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

