/**
 * config/config.example.yaml is what installers copy: it must load as shipped, and with the
 * commented platform blocks switched on, every platform's keys must be the ones the schema takes.
 */
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';

const EXAMPLE = readFileSync(new URL('../../config/config.example.yaml', import.meta.url), 'utf8');
const env = { CREDENTIALS_DIRECTORY: '/run/credentials/vms-uplink.service', TRUVIDEO_KEY: 'k', VALT_PASSWORD: 'p' };
// *_file secrets are read from the credentials directory; here every one holds a placeholder.
const readFile = (path: string): string => {
  if (path.startsWith(env.CREDENTIALS_DIRECTORY)) return 'secret\n';
  throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
};

/** The example with the commented-out blocks below `targets:` uncommented. */
function withEveryPlatform(text: string): string {
  const lines = text.split('\n');
  const first = lines.findIndex((l) => l.startsWith('  # The other platforms'));
  const end = lines.findIndex((l, i) => i > first && /^\S/.test(l));
  expect(first, 'the example has its block of other platforms').toBeGreaterThan(0);
  return [...lines.slice(0, first + 1), ...lines.slice(first + 1, end).map((l) => l.replace(/^ {2}# /, '  ')), ...lines.slice(end)].join(
    '\n',
  );
}

describe('config/config.example.yaml', () => {
  it('loads as shipped', () => {
    const config = parseConfig(EXAMPLE, { env, readFile, baseDir: '/etc/vms-uplink' });
    expect(Object.values(config.targets).map((t) => t.type)).toEqual(['alo']);
  });

  it('loads with every platform block uncommented, each with the options it documents', () => {
    const config = parseConfig(withEveryPlatform(EXAMPLE), { env, readFile, baseDir: '/etc/vms-uplink' });
    expect(Object.fromEntries(Object.entries(config.targets).map(([name, t]) => [name, t.type]))).toEqual({
      alo: 'alo',
      aion: 'aionvision',
      truvideo: 'truvideo',
      valt: 'valt',
    });
    expect(config.targets.valt).toMatchObject({
      chunk_size: 8 * 1024 * 1024,
      template: { '1': 'Field value' },
      share: { users: [1, 2], groups: [4] },
    });
    expect(config.targets.truvideo).toMatchObject({
      poll_interval: 5,
      poll_timeout: 3600,
      more_urls_path: '/upload/{uploadId}/presigned-urls',
    });
  });

  it('loads with the network block uncommented, proxy credentials and CA file as documented', () => {
    const lines = EXAMPLE.split('\n');
    const first = lines.indexOf('# network:');
    expect(first, 'the example has its network block').toBeGreaterThan(0);
    const end = lines.findIndex((l, i) => i > first && !l.startsWith('#   '));
    const text = [...lines.slice(0, first), ...lines.slice(first, end).map((l) => l.replace(/^# ?/, '')), ...lines.slice(end)].join('\n');
    const caFile = (path: string): string => {
      if (path === '/etc/ssl/corp-ca.pem') return rootCertificates[0]!;
      return readFile(path);
    };
    const config = parseConfig(text, { env, readFile: caFile, baseDir: '/etc/vms-uplink' });
    expect(config.network.proxy?.toString()).toBe('http://***:***@proxy.corp:3128');
    expect(config.network.no_proxy).toEqual(['localhost', '.corp.example', '10.0.0.0/8']);
    expect(config.network.ca_file?.certificates).toHaveLength(1);
  });
});
