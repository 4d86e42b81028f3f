import { execFileSync } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SNIFF_BYTES, readHead, sniffImage, sniffVideo } from '../../src/watch/sniff.js';

type Part = number | string | readonly number[];

/** Builds a head from byte values and ASCII strings, padded with filler to `length`. */
function head(parts: Part[], length = SNIFF_BYTES, fill = 0xa5): Uint8Array {
  const bytes: number[] = [];
  for (const part of parts) {
    if (typeof part === 'number') bytes.push(part);
    else if (typeof part === 'string') for (const ch of part) bytes.push(ch.charCodeAt(0));
    else bytes.push(...part);
  }
  while (bytes.length < length) bytes.push(fill);
  return Uint8Array.from(bytes.slice(0, Math.max(length, 0)));
}

const u32 = (n: number): number[] => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
const ftyp = (brand: string, compatible = 'isommp41'): Uint8Array =>
  head([u32(16 + compatible.length), 'ftyp', brand, [0, 0, 2, 0], compatible, u32(8), 'free']);

// A PAT packet: PUSI, PID 0, payload only, pointer 0, table_id 0.
const TS_PAT = [0x47, 0x40, 0x00, 0x10, 0x00, 0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00];
// A video PES start on PID 0x100, with a 7-byte adaptation field (PCR).
const TS_PES = [0x47, 0x41, 0x00, 0x30, 0x07, 0x50, 0x00, 0x00, 0x7b, 0x0c, 0x7e, 0x00, 0x00, 0x00, 0x01, 0xe0];
// A continuation packet of a video PID, no unit start.
const TS_CONT = [0x47, 0x01, 0x00, 0x11];

describe('sniffVideo: ISO BMFF', () => {
  it.each([
    ['isom', 'mp4', 'video/mp4'],
    ['iso2', 'mp4', 'video/mp4'],
    ['iso6', 'mp4', 'video/mp4'],
    ['mp41', 'mp4', 'video/mp4'],
    ['mp42', 'mp4', 'video/mp4'],
    ['avc1', 'mp4', 'video/mp4'],
    ['dash', 'mp4', 'video/mp4'],
    ['MSNV', 'mp4', 'video/mp4'],
    ['qt  ', 'mov', 'video/quicktime'],
    ['M4V ', 'm4v', 'video/x-m4v'],
    ['M4VH', 'm4v', 'video/x-m4v'],
    ['3gp4', '3gp', 'video/3gpp'],
    ['3gp6', '3gp', 'video/3gpp'],
    ['3ge6', '3gp', 'video/3gpp'],
    ['3g2a', '3g2', 'video/3gpp2'],
  ])('major brand %j is %s', (brand, container, contentType) => {
    expect(sniffVideo(ftyp(brand))).toEqual({ container, contentType });
  });

  it('decides by the major brand, not the compatible ones', () => {
    expect(sniffVideo(ftyp('qt  ', 'isommp42'))?.container).toBe('mov');
    expect(sniffVideo(ftyp('isom', 'qt  '))?.container).toBe('mp4');
  });

  it.each(['M4A ', 'M4B ', 'heic', 'mif1', 'avif', 'jp2 ', 'crx '])('brand %j is not a video', (brand) => {
    expect(sniffVideo(ftyp(brand))).toBeNull();
  });

  it.each(['moov', 'mdat', 'wide', 'free', 'skip', 'pnot'])('old QuickTime file starting with %j is mov', (atom) => {
    const size = atom === 'wide' ? 8 : atom === 'pnot' ? 20 : 0x1234;
    expect(sniffVideo(head([u32(size), atom, u32(0x6c), 'mvhd']))).toEqual({ container: 'mov', contentType: 'video/quicktime' });
  });

  it('accepts a 64-bit mdat (size 1) and refuses impossible box sizes', () => {
    expect(sniffVideo(head([u32(1), 'mdat', u32(0), u32(0x10000)]))?.container).toBe('mov');
    expect(sniffVideo(head([u32(4), 'ftyp', 'isom']))).toBeNull();
  });
});

describe('sniffVideo: other containers', () => {
  const ebml = (docType: string) =>
    head([
      [0x1a, 0x45, 0xdf, 0xa3],
      0x9f,
      [0x42, 0x86, 0x81, 0x01],
      [0x42, 0xf7, 0x81, 0x01],
      [0x42, 0xf2, 0x81, 0x04],
      [0x42, 0xf3, 0x81, 0x08],
      [0x42, 0x82, 0x80 | docType.length],
      docType,
      [0x42, 0x87, 0x81, 0x04],
    ]);

  it('tells WebM from Matroska by the EBML DocType', () => {
    expect(sniffVideo(ebml('webm'))).toEqual({ container: 'webm', contentType: 'video/webm' });
    expect(sniffVideo(ebml('matroska'))).toEqual({ container: 'mkv', contentType: 'video/x-matroska' });
    // A two-byte EBML size for the DocType.
    expect(sniffVideo(head([[0x1a, 0x45, 0xdf, 0xa3], 0x9f, [0x42, 0x82, 0x40, 0x04], 'webm']))?.container).toBe('webm');
    // DocType beyond the head: Matroska is the safe family name.
    expect(sniffVideo(head([[0x1a, 0x45, 0xdf, 0xa3]], 8))).toEqual({ container: 'mkv', contentType: 'video/x-matroska' });
  });

  it('recognises AVI and not other RIFF forms', () => {
    expect(sniffVideo(head(['RIFF', u32(0x10000), 'AVI LIST']))).toEqual({ container: 'avi', contentType: 'video/x-msvideo' });
    expect(sniffVideo(head(['RIFF', u32(0x10000), 'WAVEfmt ']))).toBeNull();
    expect(sniffVideo(head(['RIFF', u32(0x10000), 'WEBPVP8 ']))).toBeNull();
  });

  it('recognises MPEG transport streams from a 64-byte head', () => {
    for (const packet of [TS_PAT, TS_PES, TS_CONT]) {
      expect(sniffVideo(head([packet], 64, 0xff))).toEqual({ container: 'mpeg-ts', contentType: 'video/mp2t' });
    }
  });

  it('checks the next sync byte when the head is long enough to hold it', () => {
    const good = head([TS_PAT], 400, 0xff);
    good[188] = 0x47;
    expect(sniffVideo(good)?.container).toBe('mpeg-ts');
    const bad = head([TS_PAT], 400, 0xff);
    expect(bad[188]).toBe(0xff);
    expect(sniffVideo(bad)).toBeNull();
  });

  it('recognises M2TS (192-byte packets with a timestamp first)', () => {
    expect(sniffVideo(head([[0x1a, 0x2b, 0x3c, 0x4d], TS_PAT], 64, 0xff))).toEqual({
      container: 'm2ts',
      contentType: 'video/mp2t',
    });
    const long = head([[0x00, 0x00, 0x10, 0x00], TS_PAT], 400, 0xff);
    long[196] = 0x47;
    expect(sniffVideo(long)?.container).toBe('m2ts');
  });

  it('refuses implausible transport stream headers', () => {
    expect(sniffVideo(head([[0x47, 0xc0, 0x00, 0x10]]))).toBeNull(); // transport error bit
    expect(sniffVideo(head([[0x47, 0x40, 0x00, 0x00]]))).toBeNull(); // adaptation_field_control 00
    expect(sniffVideo(head([[0x47, 0x40, 0x00, 0x50]]))).toBeNull(); // scrambling 01 (reserved)
    expect(sniffVideo(head([[0x47, 0x40, 0x00, 0x20, 0x10]]))).toBeNull(); // adaptation-only but short
    expect(sniffVideo(head([[0x47, 0x40, 0x00, 0x10, 0x00, 0x42]]))).toBeNull(); // PAT with the wrong table
  });

  it('recognises MPEG program streams, MPEG-1 and MPEG-2', () => {
    expect(sniffVideo(head([[0x00, 0x00, 0x01, 0xba, 0x44, 0x00]]))).toEqual({ container: 'mpeg-ps', contentType: 'video/mpeg' });
    expect(sniffVideo(head([[0x00, 0x00, 0x01, 0xba, 0x21, 0x00]]))?.container).toBe('mpeg-ps');
    expect(sniffVideo(head([[0x00, 0x00, 0x01, 0xba, 0x00, 0x00]]))).toBeNull();
  });

  it('recognises FLV and ASF', () => {
    expect(sniffVideo(head(['FLV', [0x01, 0x05, 0x00, 0x00, 0x00, 0x09]]))).toEqual({ container: 'flv', contentType: 'video/x-flv' });
    const asf = [0x30, 0x26, 0xb2, 0x75, 0x8e, 0x66, 0xcf, 0x11, 0xa6, 0xd9, 0x00, 0xaa, 0x00, 0x62, 0xce, 0x6c];
    expect(sniffVideo(head([asf]))).toEqual({ container: 'asf', contentType: 'video/x-ms-asf' });
    expect(sniffVideo(head([asf.slice(0, 8)], 8))?.container).toBe('asf');
    expect(sniffVideo(head([asf.slice(0, 8), [0, 0, 0, 0, 0, 0, 0, 0]]))).toBeNull();
  });

  it('recognises raw H.264 and H.265 elementary streams', () => {
    const raw = { contentType: 'application/octet-stream' };
    expect(sniffVideo(head([[0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1f]]))).toEqual({ container: 'h264', ...raw }); // SPS, High
    expect(sniffVideo(head([[0, 0, 0, 1, 0x27, 0x42, 0xe0, 0x1e]]))).toEqual({ container: 'h264', ...raw }); // SPS, Baseline
    expect(sniffVideo(head([[0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 0x4d]]))).toEqual({ container: 'h264', ...raw }); // AUD
    expect(sniffVideo(head([[0, 0, 1, 0x67, 0x42, 0x00, 0x1e]]))).toEqual({ container: 'h264', ...raw }); // 3-byte start code
    expect(sniffVideo(head([[0, 0, 0, 1, 0x40, 0x01, 0x0c, 0x01, 0xff, 0xff]]))).toEqual({ container: 'h265', ...raw }); // VPS
    expect(sniffVideo(head([[0, 0, 0, 1, 0x42, 0x01, 0x01, 0x01]]))).toEqual({ container: 'h265', ...raw }); // SPS
    expect(sniffVideo(head([[0, 0, 0, 1, 0x46, 0x01, 0x50]]))).toEqual({ container: 'h265', ...raw }); // AUD
  });

  it('refuses other NAL units and MPEG elementary headers', () => {
    expect(sniffVideo(head([[0, 0, 0, 1, 0x65, 0x88, 0x84]]))).toBeNull(); // H.264 IDR slice
    expect(sniffVideo(head([[0, 0, 0, 1, 0x67, 0x07, 0x00]]))).toBeNull(); // SPS with an unknown profile
    expect(sniffVideo(head([[0, 0, 0, 1, 0x07, 0x64, 0x00]]))).toBeNull(); // SPS with nal_ref_idc 0
    expect(sniffVideo(head([[0, 0, 0, 1, 0xe7, 0x64]]))).toBeNull(); // forbidden bit
    expect(sniffVideo(head([[0, 0, 1, 0xb3, 0x14, 0x00]]))).toBeNull(); // MPEG-2 video sequence header
    expect(sniffVideo(head([[0, 0, 0, 1]], 4))).toBeNull();
  });
});

describe('sniffVideo: negatives', () => {
  const text = (s: string) => Uint8Array.from(Buffer.from(s.padEnd(64, ' ')));
  it.each([
    ['empty', new Uint8Array(0)],
    ['one byte', Uint8Array.of(0x47)],
    ['zeros', new Uint8Array(64)],
    ['0xff', new Uint8Array(64).fill(0xff)],
    ['plain text', text('Hello, this is not a video at all.')],
    ['text starting with G', text('GET /index.html HTTP/1.1')],
    ['JSON', text('{"incident": {"id": "x"}}')],
    ['PDF', text('%PDF-1.7\n%âãÏÓ\n1 0 obj')],
    ['ZIP', head(['PK', [3, 4, 20, 0]])],
    ['JPEG', head([[0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10], 'JFIF'])],
    ['PNG', head([[0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]])],
    ['GIF (starts with the TS sync byte)', head(['GIF89a', [0x10, 0x00, 0x10, 0x00, 0xf7, 0x00, 0x00]])],
    ['WAV', head(['RIFF', u32(100), 'WAVEfmt '])],
    ['MP3', head(['ID3', [4, 0, 0, 0, 0, 0x23]])],
    ['Ogg', head(['OggS', [0, 2]])],
  ])('%s is not a video', (_name, bytes) => {
    expect(sniffVideo(bytes)).toBeNull();
  });
});

describe('sniffImage', () => {
  it.each([
    ['JPEG', head([[0xff, 0xd8, 0xff, 0xe1], 'Exif']), 'image/jpeg'],
    ['PNG', head([[0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], u32(13), 'IHDR']), 'image/png'],
    ['GIF87a', head(['GIF87a']), 'image/gif'],
    ['GIF89a', head(['GIF89a']), 'image/gif'],
    ['WebP lossy', head(['RIFF', u32(100), 'WEBPVP8 ']), 'image/webp'],
    ['WebP lossless', head(['RIFF', u32(100), 'WEBPVP8L']), 'image/webp'],
    ['WebP extended', head(['RIFF', u32(100), 'WEBPVP8X']), 'image/webp'],
  ])('%s', (_name, bytes, contentType) => {
    expect(sniffImage(bytes)).toEqual({ contentType });
  });

  it.each([
    ['empty', new Uint8Array(0)],
    ['truncated JPEG', Uint8Array.of(0xff, 0xd8)],
    ['MP4', ftyp('isom')],
    ['AVI', head(['RIFF', u32(100), 'AVI LIST'])],
    ['WebP with a bogus chunk', head(['RIFF', u32(100), 'WEBPJUNK'])],
    ['text', Uint8Array.from(Buffer.from('GIF is a format'))],
  ])('%s is not an image', (_name, bytes) => {
    expect(sniffImage(bytes)).toBeNull();
  });
});

describe('readHead', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), 'vms-uplink-sniff-'));
  });
  afterAll(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('reads the first SNIFF_BYTES, or less from a short file', async () => {
    const big = join(dir, 'big.mp4');
    const content = Buffer.alloc(1000, 0x61);
    Buffer.from(ftyp('isom')).copy(content);
    await fsp.writeFile(big, content);
    const first = await readHead(big);
    expect(first).toHaveLength(SNIFF_BYTES);
    expect(sniffVideo(first)?.container).toBe('mp4');
    expect(await readHead(big, 10)).toEqual(Uint8Array.from(content.subarray(0, 10)));
    expect(await readHead(big, 5000)).toHaveLength(1000);

    const small = join(dir, 'small.bin');
    await fsp.writeFile(small, 'abc');
    expect(Buffer.from(await readHead(small)).toString()).toBe('abc');
    const empty = join(dir, 'empty.bin');
    await fsp.writeFile(empty, '');
    expect(await readHead(empty)).toHaveLength(0);
  });

  it('rejects a missing file', async () => {
    await expect(readHead(join(dir, 'nope'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('does not hang on a fifo without a writer', async (ctx) => {
    const pipe = join(dir, 'pipe');
    try {
      execFileSync('mkfifo', [pipe]);
    } catch {
      ctx.skip();
    }
    const outcome = await Promise.race([
      readHead(pipe).then(
        (bytes) => `read ${bytes.length}`,
        (err: NodeJS.ErrnoException) => `error ${err.code ?? ''}`,
      ),
      new Promise<string>((done) => setTimeout(() => done('hung'), 2000).unref()),
    ]);
    expect(outcome).not.toBe('hung');
  });
});
