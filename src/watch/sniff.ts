import { openExportFile } from './paths.js';

export interface ContainerInfo {
  /** 'mp4' | 'mov' | 'm4v' | '3gp' | '3g2' | 'webm' | 'mkv' | 'avi' | 'mpeg-ts' | 'm2ts' | 'mpeg-ps' | 'flv' | 'asf' | 'h264' | 'h265' */
  container: string;
  contentType: string;
}

export const SNIFF_BYTES = 64;

const ascii = (head: Uint8Array, at: number, length: number): string =>
  at + length <= head.length ? String.fromCharCode(...head.subarray(at, at + length)) : '';

const startsWith = (head: Uint8Array, at: number, bytes: readonly number[]): boolean =>
  at + bytes.length <= head.length && bytes.every((b, i) => head[at + i] === b);

const u32 = (head: Uint8Array, at: number): number =>
  ((head[at]! << 24) | (head[at + 1]! << 16) | (head[at + 2]! << 8) | head[at + 3]!) >>> 0;

/** Still pictures, audio and other non-video members of the ISO BMFF family. */
const NON_VIDEO_BRANDS = new Set([
  'M4A ',
  'M4B ',
  'M4P ',
  'F4A ',
  'F4B ', // audio
  'heic',
  'heix',
  'heim',
  'heis',
  'hevc',
  'hevx',
  'mif1',
  'msf1',
  'avif',
  'avis',
  'avci', // HEIF / AVIF images
  'jp2 ',
  'jpx ',
  'jpm ',
  'mjp2',
  'crx ', // JPEG 2000, Canon raw
]);

// Legacy QuickTime files begin with an atom other than ftyp.
const QUICKTIME_FIRST_ATOMS = new Set(['moov', 'mdat', 'wide', 'free', 'skip', 'pnot']);

const ASF_GUID = [0x30, 0x26, 0xb2, 0x75, 0x8e, 0x66, 0xcf, 0x11, 0xa6, 0xd9, 0x00, 0xaa, 0x00, 0x62, 0xce, 0x6c];

// profile_idc values defined by H.264 (Annex A, G, H): guards the raw-stream check against chance.
const H264_PROFILES = new Set([66, 77, 88, 100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135]);

const TS_PACKET = 188;
const M2TS_PACKET = 192;

/**
 * Identifies a video container from its first bytes (SNIFF_BYTES is enough), or null when the
 * head is not a video we know. Pictures are explicitly not videos, even where their magic would
 * pass a weak check (a GIF starts with 0x47, the MPEG-TS sync byte).
 */
export function sniffVideo(head: Uint8Array): ContainerInfo | null {
  if (sniffImage(head) !== null) return null;
  return isoBmff(head) ?? ebml(head) ?? riff(head) ?? others(head) ?? transportStream(head) ?? annexB(head);
}

/** Thumbnails: JPEG, PNG, GIF and WebP. */
export function sniffImage(head: Uint8Array): { contentType: string } | null {
  if (startsWith(head, 0, [0xff, 0xd8, 0xff])) return { contentType: 'image/jpeg' };
  if (startsWith(head, 0, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return { contentType: 'image/png' };
  const gif = ascii(head, 0, 6);
  if (gif === 'GIF87a' || gif === 'GIF89a') return { contentType: 'image/gif' };
  if (ascii(head, 0, 4) === 'RIFF' && ascii(head, 8, 4) === 'WEBP') {
    const chunk = ascii(head, 12, 4);
    // With a 12-byte head the chunk cannot be checked; the RIFF form type is specific enough.
    if (chunk === '' || chunk === 'VP8 ' || chunk === 'VP8L' || chunk === 'VP8X') return { contentType: 'image/webp' };
  }
  return null;
}

/** Reads up to `bytes` from the start of a file; shorter when the file is. */
export async function readHead(path: string, bytes: number = SNIFF_BYTES): Promise<Uint8Array> {
  const want = Number.isFinite(bytes) ? Math.max(0, Math.floor(bytes)) : SNIFF_BYTES;
  // Not a plain open: a symlink swapped in since the path was checked must not be followed (the
  // first bytes go into the error message of a file that is no video). O_NONBLOCK is in there too.
  const handle = await openExportFile(path);
  try {
    const buffer = new Uint8Array(want);
    let filled = 0;
    while (filled < want) {
      const { bytesRead } = await handle.read(buffer, filled, want - filled, filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    return buffer.subarray(0, filled);
  } finally {
    await handle.close();
  }
}

function isoBmff(head: Uint8Array): ContainerInfo | null {
  if (head.length < 12) return null;
  const size = u32(head, 0);
  const type = ascii(head, 4, 4);
  // 0 = "to the end of the file", 1 = 64-bit size follows; 2..7 cannot hold a box header.
  if (size > 1 && size < 8) return null;
  if (type === 'ftyp') {
    const brand = ascii(head, 8, 4);
    if (NON_VIDEO_BRANDS.has(brand)) return null;
    if (brand === 'qt  ') return { container: 'mov', contentType: 'video/quicktime' };
    if (brand.startsWith('M4V')) return { container: 'm4v', contentType: 'video/x-m4v' };
    if (brand.startsWith('3gp') || brand.startsWith('3ge') || brand.startsWith('3gg') || brand.startsWith('3gs')) {
      return { container: '3gp', contentType: 'video/3gpp' };
    }
    if (brand.startsWith('3g2')) return { container: '3g2', contentType: 'video/3gpp2' };
    // isom, iso2..iso9, mp41, mp42, avc1, dash, mmp4, f4v, XAVC, vendor brands: all MP4 in practice.
    return { container: 'mp4', contentType: 'video/mp4' };
  }
  if (QUICKTIME_FIRST_ATOMS.has(type)) return { container: 'mov', contentType: 'video/quicktime' };
  return null;
}

function ebml(head: Uint8Array): ContainerInfo | null {
  if (!startsWith(head, 0, [0x1a, 0x45, 0xdf, 0xa3])) return null;
  const docType = ebmlDocType(head);
  if (docType === 'webm') return { container: 'webm', contentType: 'video/webm' };
  return { container: 'mkv', contentType: 'video/x-matroska' };
}

/** The DocType element (ID 0x4282) usually sits within the first 40 bytes of the EBML header. */
function ebmlDocType(head: Uint8Array): string | null {
  for (let i = 4; i + 2 < head.length; i++) {
    if (head[i] !== 0x42 || head[i + 1] !== 0x82) continue;
    const first = head[i + 2]!;
    if (first === 0) continue;
    // EBML variable-length size: the count of leading zero bits gives the extra bytes.
    const extra = Math.clz32(first) - 24;
    let size = first & (0xff >> (extra + 1));
    if (i + 3 + extra > head.length) return null;
    for (let k = 0; k < extra; k++) size = size * 256 + head[i + 3 + k]!;
    const start = i + 3 + extra;
    if (size > 32 || start + size > head.length) return null;
    return String.fromCharCode(...head.subarray(start, start + size)).replace(/\0+$/, '');
  }
  return null;
}

function riff(head: Uint8Array): ContainerInfo | null {
  if (ascii(head, 0, 4) === 'RIFF' && ascii(head, 8, 4) === 'AVI ') {
    return { container: 'avi', contentType: 'video/x-msvideo' };
  }
  return null;
}

function others(head: Uint8Array): ContainerInfo | null {
  // Pack header: MPEG-2 marks '01' in the next byte's top bits, MPEG-1 '0010'.
  if (startsWith(head, 0, [0x00, 0x00, 0x01, 0xba]) && head.length >= 5) {
    const next = head[4]!;
    if ((next & 0xc0) === 0x40 || (next & 0xf0) === 0x20) return { container: 'mpeg-ps', contentType: 'video/mpeg' };
  }
  if (startsWith(head, 0, [0x46, 0x4c, 0x56, 0x01])) return { container: 'flv', contentType: 'video/x-flv' };
  const guidBytes = head.length >= ASF_GUID.length ? ASF_GUID : ASF_GUID.slice(0, 8);
  if (startsWith(head, 0, guidBytes)) return { container: 'asf', contentType: 'video/x-ms-asf' };
  return null;
}

function transportStream(head: Uint8Array): ContainerInfo | null {
  if (plausibleTsPacket(head, 0, TS_PACKET)) return { container: 'mpeg-ts', contentType: 'video/mp2t' };
  // M2TS (Blu-ray, AVCHD, many cameras): each packet carries a 4-byte arrival timestamp first.
  if (plausibleTsPacket(head, 4, M2TS_PACKET)) return { container: 'm2ts', contentType: 'video/mp2t' };
  return null;
}

/**
 * Only 64 bytes are normally available, so the next sync byte cannot be seen; instead the
 * packet header must be self-consistent: no transport error, no reserved scrambling or
 * adaptation codes, a sane adaptation length, and a payload that starts like PES or PSI.
 */
function plausibleTsPacket(head: Uint8Array, at: number, packetSize: number): boolean {
  if (head.length < at + 4 || head[at] !== 0x47) return false;
  const b1 = head[at + 1]!;
  const b3 = head[at + 3]!;
  if (b1 & 0x80) return false; // transport_error_indicator
  const scrambling = b3 >> 6;
  const adaptation = (b3 >> 4) & 0x3;
  if (scrambling === 1 || adaptation === 0) return false;
  if (head.length > at + packetSize && head[at + packetSize] !== 0x47) return false;

  let payload = at + 4;
  if (adaptation & 0x2) {
    if (head.length <= payload) return true;
    const length = head[payload]!;
    if (adaptation === 2 ? length !== 183 : length > 182) return false;
    payload += 1 + length;
  }
  const unitStart = (b1 & 0x40) !== 0;
  if (!unitStart || !(adaptation & 0x1) || scrambling !== 0) return true;
  const pid = ((b1 & 0x1f) << 8) | head[at + 2]!;
  if (head.length < payload + 3) return true;
  if (head[payload] === 0x00 && head[payload + 1] === 0x00 && head[payload + 2] === 0x01) return true; // PES
  // PSI: pointer_field, then a table_id; the PAT (PID 0) must carry table 0.
  const pointer = head[payload]!;
  const tableAt = payload + 1 + pointer;
  if (pointer > 182) return false;
  if (tableAt >= head.length) return true;
  const table = head[tableAt]!;
  if (pid === 0) return table === 0x00;
  return table !== 0xff;
}

function annexB(head: Uint8Array): ContainerInfo | null {
  let nal: number;
  if (startsWith(head, 0, [0x00, 0x00, 0x00, 0x01])) nal = 4;
  else if (startsWith(head, 0, [0x00, 0x00, 0x01])) nal = 3;
  else return null;
  if (head.length < nal + 2) return null;
  const h0 = head[nal]!;
  const h1 = head[nal + 1]!;
  if (h0 & 0x80) return null; // forbidden_zero_bit

  // HEVC's two-byte NAL header first: its AUD (0x46) would read as an H.264 SEI.
  const hevcType = (h0 >> 1) & 0x3f;
  const layerId = ((h0 & 0x01) << 5) | (h1 >> 3);
  const temporalIdPlus1 = h1 & 0x07;
  if (layerId === 0 && temporalIdPlus1 !== 0) {
    if ((hevcType === 32 || hevcType === 33) && temporalIdPlus1 === 1)
      return { container: 'h265', contentType: 'application/octet-stream' }; // VPS, SPS
    if (hevcType === 35) return { container: 'h265', contentType: 'application/octet-stream' }; // AUD
  }

  const h264Type = h0 & 0x1f;
  const refIdc = h0 >> 5;
  // SPS is always a reference NAL and names a known profile; an AUD never is and ends in a stop bit.
  if (h264Type === 7 && refIdc !== 0 && H264_PROFILES.has(h1)) return { container: 'h264', contentType: 'application/octet-stream' };
  if (h264Type === 9 && refIdc === 0 && (h1 & 0x1f) === 0x10) return { container: 'h264', contentType: 'application/octet-stream' };
  return null;
}
