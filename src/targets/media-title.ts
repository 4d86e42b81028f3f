/**
 * `<incident title> — <camera_name>`: how a video is named on platforms that keep one media item
 * or record per video (TruVideo, Valt). Without a title the incident id stands in, without a
 * camera name the file name, so that the videos of one incident stay apart.
 */
import type { SourceFile } from './target.js';

export function mediaTitle(file: SourceFile, maxLength = Infinity): string {
  const incident = file.incident.title?.trim() || `Incident ${file.incident.id}`;
  const camera = file.video.camera_name?.trim() || file.name;
  const chars = Array.from(`${incident} — ${camera}`);
  return chars.length <= maxLength ? chars.join('') : `${chars.slice(0, maxLength - 1).join('')}…`;
}
