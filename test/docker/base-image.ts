/**
 * The base image the Dockerfile's NODE_IMAGE argument takes where public images cannot be pulled:
 * what node:20-bookworm-slim holds, made from this machine. A `debootstrap --variant=minbase
 * bookworm` root from the machine's Debian mirror, the machine's Node (binary, npm, headers) in
 * /usr/local as the official image has them, the user `node` (uid 1000), and the system CA
 * bundle; brought in with `docker import`. Built once per machine and Node version: the tag is the
 * cache.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { docker, dockerOk, run, tail, type CommandResult } from './engine.js';

const SUITE = 'bookworm';
const CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

export function baseImageTag(nodeVersion = process.version): string {
  return `vms-uplink-base:node${nodeVersion.replace(/^v/, '')}-${SUITE}`;
}

export interface BaseImage {
  tag: string;
  /** false: the tag was already there. */
  built: boolean;
  ms: number;
}

export async function ensureBaseImage(): Promise<BaseImage> {
  const tag = baseImageTag();
  const started = performance.now();
  if ((await docker(['image', 'inspect', tag])).code === 0) return { tag, built: false, ms: performance.now() - started };
  const node = machineNode();
  const mirror = debianMirror();
  const work = await mkdtemp(join(tmpdir(), 'vms-uplink-base-'));
  const root = join(work, 'root');
  try {
    await must(
      run('debootstrap', ['--variant=minbase', SUITE, root, mirror], { timeoutMs: 30 * 60_000 }),
      `debootstrap --variant=minbase ${SUITE} from ${mirror} (Debian: apt-get install debootstrap)`,
    );
    // What apt downloaded is not part of an image.
    await must(
      run('sh', ['-c', `rm -rf "${root}"/var/cache/apt/archives/*.deb "${root}"/var/cache/apt/*.bin "${root}"/var/lib/apt/lists/*`]),
      'apt cleanup',
    );
    await must(run('install', ['-D', '-m', '0755', node.binary, join(root, 'usr/local/bin/node')]), 'copying node');
    await must(run('mkdir', ['-p', join(root, 'usr/local/lib/node_modules'), join(root, 'usr/local/include')]), 'mkdir');
    await must(run('cp', ['-a', node.npm, join(root, 'usr/local/lib/node_modules/npm')]), 'copying npm');
    await must(run('cp', ['-a', node.headers, join(root, 'usr/local/include/node')]), 'copying the node headers');
    await must(run('ln', ['-s', '../lib/node_modules/npm/bin/npm-cli.js', join(root, 'usr/local/bin/npm')]), 'npm link');
    await must(run('ln', ['-s', '../lib/node_modules/npm/bin/npx-cli.js', join(root, 'usr/local/bin/npx')]), 'npx link');
    await must(run('install', ['-D', '-m', '0644', CA_BUNDLE, join(root, CA_BUNDLE)]), 'copying the CA bundle');
    await must(run('chroot', [root, 'groupadd', '--gid', '1000', 'node']), 'groupadd node');
    await must(
      run('chroot', [root, 'useradd', '--uid', '1000', '--gid', 'node', '--shell', '/bin/bash', '--create-home', 'node']),
      'useradd node',
    );
    const tar = spawn('tar', ['-C', root, '-c', '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const tarExit = new Promise<number | null>((resolveExit) => tar.once('close', resolveExit));
    await dockerOk(
      [
        'import',
        '--change',
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        '--change',
        'CMD ["node"]',
        '--message',
        `debootstrap --variant=minbase ${SUITE} (${mirror}) + node ${process.version} from ${node.binary}`,
        '-',
        tag,
      ],
      { stdin: tar.stdout, timeoutMs: 10 * 60_000 },
    );
    const tarCode = await tarExit;
    if (tarCode !== 0) {
      await docker(['image', 'rm', tag]);
      throw new Error(`tar of the base root exited ${tarCode}: the import of ${tag} is incomplete and was removed`);
    }
    return { tag, built: true, ms: performance.now() - started };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function must(result: Promise<CommandResult>, what: string): Promise<CommandResult> {
  const r = await result;
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}):\n${tail(r.stderr || r.stdout)}`);
  return r;
}

/** This machine's Node: the binary running the test, and npm and the headers beside it (/usr or /usr/local). */
function machineNode(): { binary: string; npm: string; headers: string } {
  const binary = realpathSync(process.execPath);
  const prefix = dirname(dirname(binary));
  const npm = join(prefix, 'lib', 'node_modules', 'npm');
  const headers = join(prefix, 'include', 'node');
  for (const [what, path] of [
    ['npm', npm],
    ['the Node headers', join(headers, 'node.h')],
  ]) {
    if (!existsSync(path!))
      throw new Error(`${what} not found at ${path} (beside ${binary}): the base image copies this machine's Node install`);
  }
  return { binary, npm, headers };
}

/**
 * The first Debian archive (not security) in the machine's apt sources that serves bookworm's main
 * component: one-line entries of sources.list and *.list, deb822 stanzas of *.sources.
 */
export function debianMirror(): string {
  const files = ['/etc/apt/sources.list'];
  const dir = '/etc/apt/sources.list.d';
  if (existsSync(dir))
    files.push(
      ...readdirSync(dir)
        .filter((f) => /\.(list|sources)$/.test(f))
        .sort()
        .map((f) => join(dir, f)),
    );
  for (const file of files) {
    if (!existsSync(file)) continue;
    const text = readFileSync(file, 'utf8');
    const entries = file.endsWith('.sources') ? deb822Entries(text) : oneLineEntries(text);
    const found = entries.find((e) => e.types.includes('deb') && e.suites.includes(SUITE) && e.components.includes('main'));
    if (found) return found.uri.replace(/\/+$/, '');
  }
  throw new Error(`no apt source for Debian ${SUITE} main in ${files.join(', ')}: debootstrap needs a mirror`);
}

interface AptEntry {
  types: string[];
  uri: string;
  suites: string[];
  components: string[];
}

function oneLineEntries(text: string): AptEntry[] {
  return text.split('\n').flatMap((raw) => {
    const line = raw
      .replace(/#.*/, '')
      .replace(/\[[^\]]*\]/, '')
      .trim();
    const [type, uri, suite, ...components] = line.split(/\s+/);
    return type && uri && suite ? [{ types: [type], uri, suites: [suite], components }] : [];
  });
}

function deb822Entries(text: string): AptEntry[] {
  return text.split(/\n\s*\n/).flatMap((stanza) => {
    const fields = new Map<string, string[]>();
    for (const line of stanza.split('\n')) {
      const m = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
      if (m) fields.set(m[1]!.toLowerCase(), m[2]!.trim().split(/\s+/));
    }
    if (fields.get('enabled')?.[0] === 'no') return [];
    const uri = fields.get('uris')?.[0];
    return uri
      ? [{ types: fields.get('types') ?? [], uri, suites: fields.get('suites') ?? [], components: fields.get('components') ?? [] }]
      : [];
  });
}
