import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolutionLabel } from '../../src/targets/truvideo/index.js';
import { readFrameSize } from '../../src/watch/frame-size.js';
import { mp4Box as box, mp4Header, trackHeader as tkhd } from '../support/files.js';

const ftyp = mp4Header();
const mdat = box('mdat', Buffer.alloc(4096, 7));
const audioTrack = box('trak', tkhd(0, 0, 0), box('mdia', Buffer.alloc(32)));

describe('readFrameSize (ISO BMFF track headers)', () => {
  let dir: string;
  const file = async (name: string, ...boxes: Buffer[]): Promise<string> => {
    const path = join(dir, name);
    await writeFile(path, Buffer.concat(boxes));
    return path;
  };
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'frame-size-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('reads the video track of a faststart file, skipping the audio track', async () => {
    const path = await file(
      'faststart.mp4',
      ftyp,
      box('moov', box('mvhd', Buffer.alloc(100)), audioTrack, box('trak', tkhd(0, 1920, 1080))),
      mdat,
    );
    expect(await readFrameSize(path)).toEqual({ width: 1920, height: 1080 });
  });

  it('finds moov after mdat, past a 64-bit box size, with a version 1 track header', async () => {
    const large = Buffer.alloc(16 + 1000, 1);
    large.writeUInt32BE(1, 0);
    large.write('mdat', 4, 'latin1');
    large.writeBigUInt64BE(BigInt(large.length), 8);
    const path = await file('moov-last.mov', ftyp, large, box('moov', box('trak', tkhd(1, 640, 480))));
    expect(await readFrameSize(path)).toEqual({ width: 640, height: 480 });
  });

  it('takes the largest picture when there are several video tracks', async () => {
    const path = await file('two.mp4', ftyp, box('moov', box('trak', tkhd(0, 640, 360)), box('trak', tkhd(0, 1280, 720))));
    expect(await readFrameSize(path)).toEqual({ width: 1280, height: 720 });
  });

  it('answers null for files that say nothing: no moov, a truncated moov, audio only, not ISO BMFF', async () => {
    const moov = box('moov', box('trak', tkhd(0, 1920, 1080)));
    expect(await readFrameSize(await file('no-moov.mp4', ftyp, mdat))).toBeNull();
    expect(await readFrameSize(await file('truncated.mp4', ftyp, moov.subarray(0, moov.length - 10)))).toBeNull();
    expect(await readFrameSize(await file('audio.m4a', ftyp, box('moov', audioTrack)))).toBeNull();
    expect(await readFrameSize(await file('webm.webm', Buffer.from([0x1a, 0x45, 0xdf, 0xa3, 0, 0, 0, 0, 0, 0, 0, 0])))).toBeNull();
    expect(await readFrameSize(await file('empty.mp4'))).toBeNull();
  });
});

describe("resolutionLabel (TruVideo's LOW 480p, NORMAL 720p, HIGH 1080p)", () => {
  it.each([
    [640, 480, 'LOW'],
    [704, 576, 'LOW'],
    [1280, 720, 'NORMAL'],
    [1920, 1080, 'HIGH'],
    [1080, 1920, 'HIGH'],
    [3840, 2160, 'HIGH'],
    [352, 240, 'LOW'],
  ] as const)('%i×%i is %s', (width, height, label) => {
    expect(resolutionLabel({ width, height })).toBe(label);
  });
});
