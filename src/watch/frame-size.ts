/**
 * The frame size of an MP4/MOV/M4V/3GP video, read from its `moov` box: the track header
 * (`tkhd`) of each track carries the presentation width and height (ISO/IEC 14496-12 §8.3.2).
 * Platforms that label a video's resolution (TruVideo) use it; other containers give null.
 */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

export interface FrameSize {
  width: number;
  height: number;
}

/** A `moov` this large is not a camera export's; it is not read into memory. */
const MAX_MOOV_BYTES = 64 * 1024 * 1024;
/** Boxes nested this deep or more are not searched (a hostile file could nest forever). */
const MAX_DEPTH = 8;

/** The largest frame among the file's visual tracks, or null when the file says none. */
export async function readFrameSize(path: string): Promise<FrameSize | null> {
  // O_NOFOLLOW: a symlink swapped in for the checked export since it was hashed is not followed.
  const handle = await open(path, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0));
  try {
    const moov = await readTopLevelBox(handle, 'moov');
    return moov ? largestFrame(moov, 0) : null;
  } finally {
    await handle.close();
  }
}

/** The payload of the first top-level box of this type, found by seeking from header to header. */
async function readTopLevelBox(handle: FileHandle, type: string): Promise<Buffer | null> {
  const { size: fileSize } = await handle.stat();
  const header = Buffer.alloc(16);
  for (let at = 0; at + 8 <= fileSize;) {
    const { bytesRead } = await handle.read(header, 0, 16, at);
    if (bytesRead < 8) return null;
    let size = header.readUInt32BE(0);
    let headerSize = 8;
    if (size === 1) {
      if (bytesRead < 16) return null;
      size = Number(header.readBigUInt64BE(8));
      headerSize = 16;
    } else if (size === 0) {
      size = fileSize - at; // the box runs to the end of the file
    }
    if (size < headerSize) return null;
    if (header.toString('latin1', 4, 8) === type) {
      if (size > MAX_MOOV_BYTES || at + size > fileSize) return null;
      const payload = Buffer.alloc(size - headerSize);
      await handle.read(payload, 0, payload.length, at + headerSize);
      return payload;
    }
    at += size;
  }
  return null;
}

function largestFrame(boxes: Buffer, depth: number): FrameSize | null {
  let best: FrameSize | null = null;
  for (const { type, payload } of children(boxes)) {
    let found: FrameSize | null = null;
    if (type === 'tkhd') found = trackFrame(payload);
    else if (type === 'trak' && depth < MAX_DEPTH) found = largestFrame(payload, depth + 1);
    if (found && (!best || found.width * found.height > best.width * best.height)) best = found;
  }
  return best;
}

function* children(boxes: Buffer): Generator<{ type: string; payload: Buffer }> {
  for (let at = 0; at + 8 <= boxes.length;) {
    const size = boxes.readUInt32BE(at);
    if (size < 8 || at + size > boxes.length) return;
    yield { type: boxes.toString('latin1', at + 4, at + 8), payload: boxes.subarray(at + 8, at + size) };
    at += size;
  }
}

/** Width and height (16.16 fixed point) of a track header; null for tracks without a picture (audio). */
function trackFrame(tkhd: Buffer): FrameSize | null {
  const widthAt = tkhd[0] === 1 ? 88 : 76; // version 1 has 64-bit times and duration
  if (tkhd.length < widthAt + 8) return null;
  const width = tkhd.readUInt32BE(widthAt) / 65536;
  const height = tkhd.readUInt32BE(widthAt + 4) / 65536;
  return width >= 1 && height >= 1 ? { width: Math.round(width), height: Math.round(height) } : null;
}
