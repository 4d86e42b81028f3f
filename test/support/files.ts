/**
 * Test data made at run time: video-like files (a real MP4 `ftyp` header, then pseudo-random
 * bytes) written in streamed chunks so even a 10 GiB file never sits in memory.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

export const MiB = 1024 * 1024;

/** The first bytes of an ISO-BMFF (MP4) file: a 32-byte `ftyp` box with brand isom. */
export function mp4Header(): Buffer {
  const box = Buffer.alloc(32);
  box.writeUInt32BE(32, 0);
  box.write('ftypisom', 4, 'latin1');
  box.writeUInt32BE(0x200, 12);
  box.write('isomiso2avc1mp41', 16, 'latin1');
  return box;
}

/** An ISO-BMFF box: 32-bit size, four-letter type, payload. */
export function mp4Box(type: string, ...payload: Buffer[]): Buffer {
  const body = Buffer.concat(payload);
  const header = Buffer.alloc(8);
  header.writeUInt32BE(8 + body.length);
  header.write(type, 4, 'latin1');
  return Buffer.concat([header, body]);
}

/** A track header (`tkhd`) of version 0 or 1 giving the frame size in 16.16 fixed point; 0×0 is an audio track. */
export function trackHeader(version: 0 | 1, width: number, height: number): Buffer {
  const payload = Buffer.alloc(version === 1 ? 96 : 84);
  payload[0] = version;
  const at = version === 1 ? 88 : 76;
  payload.writeUInt32BE(width * 65536, at);
  payload.writeUInt32BE(height * 65536, at + 4);
  return mp4Box('tkhd', payload);
}

/** The head of a faststart MP4 whose video track is `width`×`height`: ftyp, then moov. */
export function mp4HeaderWithFrame(width: number, height: number): Buffer {
  return Buffer.concat([mp4Header(), mp4Box('moov', mp4Box('trak', trackHeader(0, 0, 0)), mp4Box('trak', trackHeader(0, width, height)))]);
}

export const JPEG_HEADER = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01]);

/** Writes `size` bytes starting with an MP4 header (when there is room) and returns the SHA-256. */
export async function writeVideo(path: string, size: number, header: Buffer = mp4Header()): Promise<string> {
  await mkdir(dirname(path), { recursive: true });
  const sha = createHash('sha256');
  const fh = await open(path, 'w');
  try {
    let written = 0;
    const head = header.subarray(0, Math.min(header.length, size));
    if (head.length) {
      await fh.write(head);
      sha.update(head);
      written = head.length;
    }
    const chunk = 4 * MiB;
    while (written < size) {
      const buf = randomBytes(Math.min(chunk, size - written));
      await fh.write(buf);
      sha.update(buf);
      written += buf.length;
    }
  } finally {
    await fh.close();
  }
  return sha.digest('hex');
}

export async function writeThumbnail(path: string, size = 2048): Promise<string> {
  const buf = Buffer.concat([JPEG_HEADER, randomBytes(Math.max(0, size - JPEG_HEADER.length))]);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, buf);
  return createHash('sha256').update(buf).digest('hex');
}

export async function sha256File(path: string): Promise<string> {
  const sha = createHash('sha256');
  for await (const chunk of createReadStream(path)) sha.update(chunk as Buffer);
  return sha.digest('hex');
}

export async function tempDir(prefix = 'vms-uplink-test-'): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}
