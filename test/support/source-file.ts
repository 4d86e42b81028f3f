/** A video export as the engine hands it to a target, for tests that call a target directly. */
import type { SourceFile } from '../../src/targets/target.js';

export function videoSource(size: number, over: Partial<SourceFile> = {}): SourceFile {
  return {
    role: 'video',
    path: '/srv/exports/inc-1/cam01.mp4',
    name: 'cam01.mp4',
    size,
    sha256: null,
    stamp: '',
    contentType: 'video/mp4',
    incident: { id: 'inc-1' },
    video: { id: 'v1' },
    ...over,
  };
}
