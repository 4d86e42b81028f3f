/**
 * Checks of the ledger's files made before SQLite opens them for writing. Opening a damaged
 * ledger read-write is not harmless: SQLite silently drops a write-ahead log whose header is
 * damaged, or every frame after a damaged one, and the last connection checkpoints and deletes
 * the log when it closes — committed transactions would vanish with the evidence. So the
 * files are read here first, by hand, and only a ledger that passes is opened for writing.
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';

const WAL_HEADER = 32;
const FRAME_HEADER = 24;

function readAt(fd: number, length: number, position: number): Buffer {
  const buf = Buffer.alloc(length);
  const n = readSync(fd, buf, 0, length, position);
  return buf.subarray(0, n);
}

/** What is wrong with the database file's header and size, or null. */
export function checkDatabaseFile(path: string): string | null {
  let size: number;
  try {
    size = statSync(path).size;
  } catch {
    return null; // missing: a new ledger
  }
  if (size === 0) return null; // SQLite's empty database
  const fd = openSync(path, 'r');
  try {
    const header = readAt(fd, 100, 0);
    if (header.length < 100) return `the file is ${size} bytes, shorter than an SQLite header: truncated`;
    if (header.toString('latin1', 0, 16) !== 'SQLite format 3\u0000') {
      return `the file does not start with the SQLite header (first bytes ${header.subarray(0, 8).toString('hex')})`;
    }
    const raw = header.readUInt16BE(16);
    const pageSize = raw === 1 ? 65536 : raw;
    if (pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) return `the header gives an impossible page size (${raw})`;
    if (size % pageSize !== 0) return `the file is ${size} bytes, not a whole number of ${pageSize}-byte pages: truncated or overwritten`;
    const pages = header.readUInt32BE(28);
    const valid = pages > 0 && header.readUInt32BE(24) === header.readUInt32BE(92);
    if (valid && pages * pageSize > size) {
      return `the header says ${pages} pages (${pages * pageSize} bytes), the file has ${size} bytes: truncated`;
    }
    return null;
  } finally {
    closeSync(fd);
  }
}

/** SQLite's WAL checksum over 8-byte units, continuing from (s0, s1). */
function walChecksum(data: Buffer, bigEndian: boolean, s0: number, s1: number): [number, number] {
  for (let i = 0; i + 8 <= data.length; i += 8) {
    const x0 = bigEndian ? data.readUInt32BE(i) : data.readUInt32LE(i);
    const x1 = bigEndian ? data.readUInt32BE(i + 4) : data.readUInt32LE(i + 4);
    s0 = (s0 + x0 + s1) >>> 0;
    s1 = (s1 + x1 + s0) >>> 0;
  }
  return [s0, s1];
}

/**
 * What is wrong with the write-ahead log, or null. A log that ends in a torn frame is normal
 * after a power cut (that last transaction never committed); a damaged header, or a damaged
 * frame followed by more than one committed transaction, is corruption: those transactions
 * were on disk and SQLite would drop them without a word.
 */
export function checkWalFile(walPath: string): string | null {
  let size: number;
  try {
    size = statSync(walPath).size;
  } catch {
    return null;
  }
  if (size === 0) return null;
  const fd = openSync(walPath, 'r');
  try {
    const header = readAt(fd, WAL_HEADER, 0);
    if (header.length < WAL_HEADER) return null; // a log whose header never got written holds nothing
    const magic = header.readUInt32BE(0);
    if (magic !== 0x377f0682 && magic !== 0x377f0683)
      return `the write-ahead log ${walPath} has no valid header (first bytes ${header.subarray(0, 8).toString('hex')})`;
    const bigEndian = magic === 0x377f0683;
    let [s0, s1] = walChecksum(header.subarray(0, 24), bigEndian, 0, 0);
    if (s0 !== header.readUInt32BE(24) || s1 !== header.readUInt32BE(28))
      return `the write-ahead log ${walPath} has a damaged header (checksum mismatch)`;
    const pageSize = header.readUInt32BE(8);
    if (pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0)
      return `the write-ahead log ${walPath} gives an impossible page size (${pageSize})`;
    const salt1 = header.readUInt32BE(16);
    const salt2 = header.readUInt32BE(20);
    const frameSize = FRAME_HEADER + pageSize;
    let offset = WAL_HEADER;
    let frame = 0;
    let broken = -1;
    let commitsAfterBreak = 0;
    for (; offset + frameSize <= size; offset += frameSize, frame++) {
      const data = readAt(fd, frameSize, offset);
      const sameLog = data.readUInt32BE(8) === salt1 && data.readUInt32BE(12) === salt2;
      if (broken < 0) {
        // A frame of an older generation of the log (other salts) ends it as much as a torn one.
        const [c0, c1] = walChecksum(data.subarray(FRAME_HEADER), bigEndian, ...walChecksum(data.subarray(0, 8), bigEndian, s0, s1));
        if (sameLog && c0 === data.readUInt32BE(16) && c1 === data.readUInt32BE(20) && data.readUInt32BE(0) > 0) {
          [s0, s1] = [c0, c1];
          continue;
        }
        broken = frame;
      } else if (sameLog && data.readUInt32BE(4) !== 0) {
        commitsAfterBreak++;
      }
    }
    if (commitsAfterBreak >= 2) {
      return `the write-ahead log ${walPath} is damaged at frame ${broken + 1}, and ${commitsAfterBreak} committed transactions follow it`;
    }
    return null;
  } finally {
    closeSync(fd);
  }
}
