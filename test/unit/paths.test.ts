import { execFileSync } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Volume } from 'memfs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isIgnoredName, resolveExportPath, type ExportPathFs } from '../../src/watch/paths.js';

describe('isIgnoredName', () => {
  it.each(['.hidden', '.DS_Store', '.', '..', 'cam.tmp', 'cam.mov.part', 'cam.mov.PARTIAL', 'cam.MOV.CrDownload', 'x.TMP'])(
    'ignores %j',
    (name) => expect(isIgnoredName(name)).toBe(true),
  );
  it.each(['cam.mov', 'incident.json', 'tmp', 'part.mov', 'cam.tmp.mov', 'a.partials', '%2e%2e', 'cam..mov', ''])('reads %j', (name) =>
    expect(isIgnoredName(name)).toBe(false),
  );
});

describe('resolveExportPath: lexical rules (memfs)', () => {
  const vol = Volume.fromJSON({
    '/exports/inc/cam.mov': 'video',
    '/exports/inc/sub/cam2.mov': 'video',
    '/exports/inc/%2e%2e/x.mov': 'video',
    '/exports/inc/%2e%2e.mov': 'video',
    '/exports/inc/cam..2.mov': 'video',
    '/exports/inc/.hidden.mov': 'video',
    '/exports/inc/cam.mov.part': 'video',
    '/exports/inc/dir/.keep': '',
    '/exports/other/secret.mov': 'secret',
  });
  vol.symlinkSync('/exports/other/secret.mov', '/exports/inc/escape.mov');
  vol.symlinkSync('/exports/inc/cam.mov', '/exports/inc/inside.mov');
  const memfs = vol.promises as unknown as ExportPathFs;
  const resolve = (relative: string) => resolveExportPath('/exports/inc', relative, memfs);

  it.each([
    ['cam.mov', '/exports/inc/cam.mov'],
    ['./cam.mov', '/exports/inc/cam.mov'],
    ['sub/cam2.mov', '/exports/inc/sub/cam2.mov'],
    ['sub//cam2.mov', '/exports/inc/sub/cam2.mov'],
    ['sub\\cam2.mov', '/exports/inc/sub/cam2.mov'],
    ['%2e%2e/x.mov', '/exports/inc/%2e%2e/x.mov'],
    ['%2e%2e.mov', '/exports/inc/%2e%2e.mov'],
    ['cam..2.mov', '/exports/inc/cam..2.mov'],
    ['inside.mov', '/exports/inc/cam.mov'],
  ])('resolves %j', async (relative, expected) => {
    expect(await resolve(relative)).toEqual({ kind: 'ok', path: expected });
  });

  it.each([
    ['', 'file "" is empty'],
    ['/etc/passwd', 'file "/etc/passwd" is an absolute path'],
    ['\\etc\\passwd', 'file "\\\\etc\\\\passwd" is an absolute path'],
    ['\\\\server\\share\\x.mov', 'file "\\\\\\\\server\\\\share\\\\x.mov" is an absolute path'],
    ['C:\\exports\\x.mov', 'file "C:\\\\exports\\\\x.mov" is an absolute path'],
    ['c:x.mov', 'file "c:x.mov" is an absolute path'],
    ['../x.mov', 'file "../x.mov" leaves the incident folder'],
    ['sub/../cam.mov', 'file "sub/../cam.mov" leaves the incident folder'],
    ['sub\\..\\..\\x.mov', 'file "sub\\\\..\\\\..\\\\x.mov" leaves the incident folder'],
    ['..', 'file ".." leaves the incident folder'],
    ['cam\0.mov', 'file "cam\\u0000.mov" contains a NUL byte'],
    ['.', 'file "." does not name a file'],
    ['./', 'file "./" does not name a file'],
    ['.hidden.mov', 'file ".hidden.mov" is an ignored name (".hidden.mov": dot-files and partial downloads are never read)'],
    ['cam.mov.part', 'file "cam.mov.part" is an ignored name ("cam.mov.part": dot-files and partial downloads are never read)'],
    ['.snapshot/cam.mov', 'file ".snapshot/cam.mov" is an ignored name (".snapshot": dot-files and partial downloads are never read)'],
    ['dir', 'file "dir" is a directory'],
    ['sub/', 'file "sub/" is a directory'],
    ['escape.mov', 'file "escape.mov" leaves the incident folder'],
  ])('refuses %j', async (relative, reason) => {
    expect(await resolve(relative)).toEqual({ kind: 'refused', reason });
  });

  it('reports files that do not exist yet as missing', async () => {
    expect(await resolve('later.mov')).toEqual({ kind: 'missing' });
    expect(await resolve('nodir/later.mov')).toEqual({ kind: 'missing' });
    expect(await resolve('cam.mov/inside')).toEqual({ kind: 'missing' }); // ENOTDIR
    expect(await resolveExportPath('/exports/gone', 'cam.mov', memfs)).toEqual({ kind: 'missing' });
  });
});

describe('resolveExportPath: a real filesystem', () => {
  let root: string;
  let inc: string;
  let outside: string;
  let socketServer: Server | undefined;

  beforeAll(async () => {
    root = await fsp.mkdtemp(join(tmpdir(), 'vms-uplink-paths-'));
    inc = join(root, 'exports', 'inc');
    outside = join(root, 'outside');
    await fsp.mkdir(join(inc, 'sub'), { recursive: true });
    await fsp.mkdir(outside, { recursive: true });
    await fsp.writeFile(join(inc, 'cam.mov'), 'video');
    await fsp.writeFile(join(inc, 'sub', 'cam2.mov'), 'video');
    await fsp.writeFile(join(outside, 'secret.mov'), 'secret');
    await fsp.symlink('cam.mov', join(inc, 'relative-link.mov'));
    await fsp.symlink(join(inc, 'sub', 'cam2.mov'), join(inc, 'absolute-link.mov'));
    await fsp.symlink(join(outside, 'secret.mov'), join(inc, 'escape.mov'));
    await fsp.symlink('../../outside/secret.mov', join(inc, 'escape-relative.mov'));
    await fsp.symlink(join(inc, 'sub'), join(inc, 'dir-link'));
    await fsp.symlink(outside, join(inc, 'outside-dir'));
    await fsp.symlink('.', join(inc, 'self'));
    await fsp.symlink(join(inc, 'not-yet.mov'), join(inc, 'dangling.mov'));
    await fsp.symlink('loop-b', join(inc, 'loop-a'));
    await fsp.symlink('loop-a', join(inc, 'loop-b'));
    await fsp.symlink('/dev/null', join(inc, 'devnull.mov'));
    await fsp.symlink(inc, join(root, 'inc-link'));
  });

  afterAll(async () => {
    await new Promise<void>((done) => (socketServer ? socketServer.close(() => done()) : done()));
    await fsp.rm(root, { recursive: true, force: true });
  });

  it('accepts a plain file and links that stay inside, returning the real path', async () => {
    const real = await fsp.realpath(inc);
    expect(await resolveExportPath(inc, 'cam.mov')).toEqual({ kind: 'ok', path: join(real, 'cam.mov') });
    expect(await resolveExportPath(inc, 'relative-link.mov')).toEqual({ kind: 'ok', path: join(real, 'cam.mov') });
    expect(await resolveExportPath(inc, 'absolute-link.mov')).toEqual({ kind: 'ok', path: join(real, 'sub', 'cam2.mov') });
    expect(await resolveExportPath(inc, 'dir-link/cam2.mov')).toEqual({ kind: 'ok', path: join(real, 'sub', 'cam2.mov') });
  });

  it('resolves the incident folder itself through symlinks', async () => {
    const real = await fsp.realpath(inc);
    expect(await resolveExportPath(join(root, 'inc-link'), 'cam.mov')).toEqual({ kind: 'ok', path: join(real, 'cam.mov') });
  });

  it('refuses links that resolve outside the incident folder', async () => {
    for (const name of ['escape.mov', 'escape-relative.mov', 'outside-dir/secret.mov', 'devnull.mov']) {
      expect(await resolveExportPath(inc, name)).toEqual({
        kind: 'refused',
        reason: `file ${JSON.stringify(name)} leaves the incident folder`,
      });
    }
  });

  it('refuses links to directories', async () => {
    expect(await resolveExportPath(inc, 'dir-link')).toEqual({ kind: 'refused', reason: 'file "dir-link" is a directory' });
    expect(await resolveExportPath(inc, 'self')).toEqual({ kind: 'refused', reason: 'file "self" is a directory' });
    expect(await resolveExportPath(inc, 'outside-dir')).toEqual({
      kind: 'refused',
      reason: 'file "outside-dir" leaves the incident folder',
    });
  });

  it('waits for a dangling link target, and sees it once it appears', async () => {
    expect(await resolveExportPath(inc, 'dangling.mov')).toEqual({ kind: 'missing' });
    await fsp.writeFile(join(inc, 'not-yet.mov'), 'video');
    expect(await resolveExportPath(inc, 'dangling.mov')).toEqual({
      kind: 'ok',
      path: join(await fsp.realpath(inc), 'not-yet.mov'),
    });
  });

  it('refuses a symlink loop', async () => {
    expect(await resolveExportPath(inc, 'loop-a')).toEqual({ kind: 'refused', reason: 'file "loop-a" is a symlink loop' });
  });

  it('refuses a fifo', async (ctx) => {
    try {
      execFileSync('mkfifo', [join(inc, 'pipe.mov')]);
    } catch {
      ctx.skip();
    }
    expect(await resolveExportPath(inc, 'pipe.mov')).toEqual({
      kind: 'refused',
      reason: 'file "pipe.mov" is not a regular file (fifo)',
    });
  });

  it('refuses a socket', async (ctx) => {
    if (process.platform === 'win32') ctx.skip();
    const server = createServer();
    socketServer = server;
    await new Promise<void>((done) => server.listen(join(inc, 'sock.mov'), done));
    expect(await resolveExportPath(inc, 'sock.mov')).toEqual({
      kind: 'refused',
      reason: 'file "sock.mov" is not a regular file (socket)',
    });
  });
});
