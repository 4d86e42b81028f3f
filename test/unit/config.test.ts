import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import util from 'node:util';
import { Volume } from 'memfs';
import { CONFIG_PATH, loadYaml, problemsOf } from '../support/config.js';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, DEFAULT_CONFIG_PATH, resolveConfigPath } from '../../src/config/config-file.js';
import { loadConfig, parseConfig, resolveConfig } from '../../src/config/load.js';
import { describeConfig } from '../../src/config/mask.js';
import type { AuthConfig, LoginAuth } from '../../src/config/target-keys.js';
import { redactUrl } from '../../src/log/redact.js';
import type { Config, TargetConfig } from '../../src/config/schema.js';
import { Secret } from '../../src/config/secret.js';
import { formatDuration, parseDuration, parseRate, parseSize } from '../../src/config/units.js';

const load = loadYaml;

const MINIMAL = `
watch:
  root: /srv/vms/exports
targets:
  alo:
    type: alo
    base_url: https://api.alo.ai/v1
    auth: { bearer: t0ken-alo }
`;

/** MINIMAL with extra top-level YAML appended. */
const minimalWith = (extra: string) => MINIMAL + extra;

const CONTRACT_EXAMPLE = `
watch:
  root: /srv/vms/exports
  settle_seconds: 10
  missing_file_seconds: 3600
  poll: false                 # true for SMB/NFS mounts, where change events do not arrive
ledger:
  path: /var/lib/vms-uplink/ledger.db
upload:
  concurrency: 4              # parts in flight across all uploads
  part_size: 16MiB            # preferred; each target clamps it to its own limits
  bandwidth: unlimited        # e.g. 4MiB/s, or a schedule — see below
  # bandwidth:
  #   - { cron: "0 7 * * 1-5", limit: 2MiB/s }
  #   - { cron: "0 19 * * *", limit: unlimited }
after_upload: keep            # keep | delete | move (with after_upload_dir)
targets:                      # one or more; every incident goes to every target unless \`routes\` says otherwise
  alo:
    type: alo
    base_url: https://api.alo.ai/v1
    auth: { bearer: "\${ALO_TOKEN}" }
    multipart_threshold: 100MiB
  aion:
    type: aionvision
    base_url: https://api.aionvision.tech/api/v2
    auth: { bearer_file: /run/credentials/vms-uplink/aion_key }
  truvideo:
    type: truvideo
    base_url: https://upload-api.truvideo.com
    auth:
      login: { url: "https://auth.truvideo.com/token", body: { apiKey: "\${TRUVIDEO_KEY}" }, token_field: accessToken }
  valt:
    type: valt
    base_url: http://valt.example.com/api/v3
    chunk_size: 8MiB
    auth:
      login: { url: "http://valt.example.com/api/v3/login", body: { username: u, password: "\${VALT_PASSWORD}" }, token_field: data.access_token }
      send_as: { query: access_token }
api:
  listen: 127.0.0.1:9420
  token_file: /run/credentials/vms-uplink/api_token
log:
  level: info
`;

const SECRETS = {
  ALO_TOKEN: 'alo-secret-token-1',
  TRUVIDEO_KEY: 'truvideo-secret-key-2',
  VALT_PASSWORD: 'valt-secret-password-3',
  aion: 'aion-secret-key-4',
  api: 'api-secret-token-5',
};

const CONTRACT_FILES = {
  '/run/credentials/vms-uplink/aion_key': `${SECRETS.aion}\n`,
  '/run/credentials/vms-uplink/api_token': `${SECRETS.api}\n\n`,
};
const CONTRACT_ENV = { ALO_TOKEN: SECRETS.ALO_TOKEN, TRUVIDEO_KEY: SECRETS.TRUVIDEO_KEY, VALT_PASSWORD: SECRETS.VALT_PASSWORD };

function loadContractExample(): Config {
  return load(CONTRACT_EXAMPLE, { env: CONTRACT_ENV, files: CONTRACT_FILES });
}

/** The token of a bearer auth block, whichever form (bearer or bearer_file) gave it. */
function bearerOf(auth: AuthConfig | undefined): string | undefined {
  return auth && 'bearer' in auth
    ? (auth.bearer ?? auth.bearer_file)?.reveal()
    : auth && 'bearer_file' in auth
      ? auth.bearer_file?.reveal()
      : undefined;
}

function headerValueOf(auth: AuthConfig | undefined): string | undefined {
  return auth && 'header' in auth ? (auth.value ?? auth.value_file)?.reveal() : undefined;
}

function target<T extends TargetConfig['type']>(config: Config, name: string, type: T): Extract<TargetConfig, { type: T }> {
  const t = config.targets[name];
  expect(t?.type).toBe(type);
  return t as Extract<TargetConfig, { type: T }>;
}

describe('parseSize', () => {
  it.each([
    [0, 0],
    [1024, 1024],
    ['1024', 1024],
    ['512B', 512],
    ['16MiB', 16 * 1024 ** 2],
    ['16 MiB', 16 * 1024 ** 2],
    [' 8KiB ', 8192],
    ['1.5GiB', 1.5 * 1024 ** 3],
    ['1TiB', 1024 ** 4],
    ['1KB', 1000],
    ['1kB', 1000],
    ['5MB', 5_000_000],
    ['2GB', 2e9],
    ['1TB', 1e12],
    ['0.5KiB', 512],
    ['1.0001KiB', 1024], // rounded to a whole byte
  ])('%j → %d', (input, bytes) => {
    expect(parseSize(input)).toBe(bytes);
  });

  it.each(['', 'abc', '16Mb', '16M', '16 mebibytes', '-1', '-1MiB', '1.5', '1.5B', 'MiB', '1e3', '99999999999TiB'])(
    'refuses %j with a message that quotes it',
    (input) => {
      expect(() => parseSize(input)).toThrow(JSON.stringify(input));
    },
  );

  it('refuses negative, fractional and non-finite numbers', () => {
    expect(() => parseSize(-1)).toThrow(/negative/);
    expect(() => parseSize(1.5)).toThrow(/whole number/);
    expect(() => parseSize(Number.POSITIVE_INFINITY)).toThrow();
  });

  it('lists the accepted units', () => {
    expect(() => parseSize('16Mb')).toThrow(/KiB, MiB, GiB/);
  });
});

describe('parseRate', () => {
  it.each([
    ['unlimited', null],
    ['Unlimited', null],
    ['4MiB/s', 4 * 1024 ** 2],
    ['4 MiB / s', 4 * 1024 ** 2],
    ['4MiB', 4 * 1024 ** 2],
    ['500KB/s', 500_000],
    ['100Mbit/s', 12_500_000],
    ['8kbit/s', 1000],
    [1000, 1000],
    ['1000', 1000],
  ])('%j → %j', (input, expected) => {
    expect(parseRate(input)).toBe(expected);
  });

  it.each([0, '0', '0MiB/s', -5, 'fast', '4MiB/h', ''])('refuses %j', (input) => {
    expect(() => parseRate(input)).toThrow(/invalid rate/);
  });

  it('says how to write no limit when given zero', () => {
    expect(() => parseRate(0)).toThrow(/unlimited/);
  });
});

describe('parseDuration', () => {
  it.each([
    [0, 0],
    [0.5, 0.5],
    ['0.5', 0.5],
    ['10', 10],
    ['30s', 30],
    ['30 s', 30],
    ['15m', 900],
    ['2h', 7200],
    ['7d', 604800],
    ['1w', 604800],
    ['500ms', 0.5],
    ['1h30m', 5400],
    ['1h 30m 15s', 5415],
    ['1.5h', 5400],
  ])('%j → %d seconds', (input, seconds) => {
    expect(parseDuration(input)).toBe(seconds);
  });

  it.each(['', 'soon', '-5s', '5 minutes', '10x', '1h-30m', 's', '30S'])('refuses %j', (input) => {
    expect(() => parseDuration(input)).toThrow(/invalid duration/);
  });

  it('refuses negative and non-finite numbers', () => {
    expect(() => parseDuration(-1)).toThrow(/invalid duration/);
    expect(() => parseDuration(Number.NaN)).toThrow(/invalid duration/);
  });

  it.each([
    [2_592_000, '30d'],
    [43_200, '12h'],
    [5400, '90m'],
    [45, '45s'],
    [0.5, '500ms'],
  ])('formats %d seconds back as %j', (seconds, text) => {
    expect(formatDuration(seconds)).toBe(text);
    expect(parseDuration(text)).toBe(seconds);
  });
});

describe('watch.ignore_older', () => {
  it('is off unless set, and takes a duration', () => {
    expect(load(MINIMAL).watch.ignore_older).toBeUndefined();
    expect(load(MINIMAL.replace('root: /srv/vms/exports', 'root: /srv/vms/exports\n  ignore_older: 30d')).watch.ignore_older).toBe(
      30 * 86400,
    );
    expect(load(MINIMAL.replace('root: /srv/vms/exports', 'root: /srv/vms/exports\n  ignore_older: 12h')).watch.ignore_older).toBe(
      12 * 3600,
    );
  });

  it.each([
    ['a month', /^watch\.ignore_older: invalid duration "a month"/],
    ['0', /^watch\.ignore_older: must be more than 0 seconds$/],
    ['-3d', /^watch\.ignore_older: invalid duration "-3d": must not be negative$/],
  ])('refuses %j, naming the key', (value, problem) => {
    const problems = problemsOf(() =>
      load(MINIMAL.replace('root: /srv/vms/exports', `root: /srv/vms/exports\n  ignore_older: "${value}"`)),
    );
    expect(problems).toEqual([expect.stringMatching(problem)]);
  });
});

describe('Secret', () => {
  const secret = new Secret('hunter2');

  it('reveals its value only on request', () => {
    expect(secret.reveal()).toBe('hunter2');
    expect(String(secret)).toBe('***');
    expect(`${String(secret)}`).toBe('***');
    expect(JSON.stringify({ secret })).toBe('{"secret":"***"}');
    expect(util.inspect({ secret })).toBe('{ secret: Secret(***) }');
    expect(util.format('%s %o %j', secret, secret, secret)).not.toContain('hunter2');
    expect(Object.keys(secret)).toEqual([]);
    expect(JSON.stringify({ ...secret })).not.toContain('hunter2');
  });
});

describe('the contract example', () => {
  it('validates with its environment variables and credential files', () => {
    const config = loadContractExample();
    expect(config.watch).toEqual({
      root: '/srv/vms/exports',
      settle_seconds: 10,
      missing_file_seconds: 3600,
      poll: false,
      poll_interval: 2,
      rescan_interval: 300,
    });
    expect(config.ledger.path).toBe('/var/lib/vms-uplink/ledger.db');
    expect(config.upload.part_size).toBe(16 * 1024 ** 2);
    expect(config.upload.bandwidth).toEqual(null);
    expect(config.after_upload).toBe('keep');
    expect(Object.keys(config.targets)).toEqual(['alo', 'aion', 'truvideo', 'valt']);

    const alo = target(config, 'alo', 'alo');
    expect(alo.base_url).toBe('https://api.alo.ai/v1');
    expect(alo.multipart_threshold).toBe(100 * 1024 ** 2);
    expect(bearerOf(alo.auth)).toBe(SECRETS.ALO_TOKEN);

    const aion = target(config, 'aion', 'aionvision');
    expect(bearerOf(aion.auth)).toBe(SECRETS.aion);

    const truvideo = target(config, 'truvideo', 'truvideo');
    const truAuth = truvideo.auth as LoginAuth;
    expect(JSON.parse(truAuth.login.body!.reveal())).toEqual({ apiKey: SECRETS.TRUVIDEO_KEY });
    expect(truAuth.login.token_field).toBe('accessToken');
    expect(truAuth.send_as).toBeUndefined();
    expect(truvideo.more_urls_path).toBe('/upload/{uploadId}/presigned-urls');

    const valt = target(config, 'valt', 'valt');
    const valtAuth = valt.auth as LoginAuth;
    expect(valt.chunk_size).toBe(8 * 1024 ** 2);
    expect(JSON.parse(valtAuth.login.body!.reveal())).toEqual({ username: 'u', password: SECRETS.VALT_PASSWORD });
    expect(valtAuth.login.token_field).toBe('data.access_token');
    expect(valtAuth.send_as).toEqual({ query: 'access_token' });

    expect(config.api?.listen).toBe('127.0.0.1:9420');
    expect(config.api?.token_file?.reveal()).toBe(SECRETS.api);
    expect(config.api?.targets_down_after).toBe(15 * 60);
    expect(config.log.level).toBe('info');
  });

  it('with the bandwidth schedule from its comment', () => {
    const config = load(
      CONTRACT_EXAMPLE.replace(
        'bandwidth: unlimited',
        'bandwidth:\n    - { cron: "0 7 * * 1-5", limit: 2MiB/s }\n    - { cron: "0 19 * * *", limit: unlimited }',
      ),
      { env: CONTRACT_ENV, files: CONTRACT_FILES },
    );
    expect(config.upload.bandwidth).toEqual([
      { cron: '0 7 * * 1-5', limit: 2 * 1024 ** 2 },
      { cron: '0 19 * * *', limit: null },
    ]);
  });
});

describe('defaults', () => {
  it('fills every optional key', () => {
    const config = load(MINIMAL);
    expect(config).toMatchObject({
      watch: {
        root: '/srv/vms/exports',
        settle_seconds: 10,
        missing_file_seconds: 3600,
        poll: false,
        poll_interval: 2,
        rescan_interval: 300,
      },
      ledger: { path: '/var/lib/vms-uplink/ledger.db', min_free: 256 * 1024 ** 2 },
      upload: {
        concurrency: 4,
        part_size: 16 * 1024 ** 2,
        bandwidth: null,
        stall_timeout: 60,
        retry_initial: 1,
        retry_max: 300,
        drain_timeout: 10,
      },
      after_upload: 'keep',
      log: { level: 'info' },
    });
    expect(config.retention).toBeUndefined();
    expect(config.api).toBeUndefined();
    expect(target(config, 'alo', 'alo')).toMatchObject({ multipart_threshold: 100 * 1024 ** 2, request_timeout: 30 });
  });

  it('per target type', () => {
    const config = load(`
watch: { root: /srv/x }
targets:
  tv: { type: truvideo, base_url: "https://tv.example.com/", auth: { bearer: x } }
  v: { type: valt, base_url: "https://valt.example.com/api/v3//", auth: { bearer: x } }
  a: { type: aionvision, base_url: "https://aion.example.com", auth: { bearer: x } }
`);
    expect(target(config, 'tv', 'truvideo')).toMatchObject({
      base_url: 'https://tv.example.com',
      request_timeout: 30,
      more_urls_path: '/upload/{uploadId}/presigned-urls',
      poll_interval: 5,
      poll_timeout: 3600,
    });
    expect(target(config, 'v', 'valt')).toMatchObject({
      base_url: 'https://valt.example.com/api/v3',
      chunk_size: 8 * 1024 ** 2,
    });
    expect(target(config, 'v', 'valt')).not.toHaveProperty('template');
    expect(target(config, 'v', 'valt')).not.toHaveProperty('share');
    expect(target(config, 'a', 'aionvision').request_timeout).toBe(30);
  });

  it('treats a key with no value as left out', () => {
    const config = load(minimalWith('retention:\napi:\nupload:\n  bandwidth:\n'));
    expect(config.retention).toBeUndefined();
    expect(config.api).toBeUndefined();
    expect(config.upload.bandwidth).toEqual(null);
  });

  it('reads explicit values in every unit', () => {
    const config = load(
      minimalWith(`
upload:
  concurrency: 16
  part_size: 64MiB
  bandwidth: 4MiB/s
  stall_timeout: 2m
  retry_initial: 500ms
  retry_max: 10m
  drain_timeout: 0
after_upload: move
after_upload_dir: /srv/vms/uploaded
retention: { delete_uploaded_after: 7d }
log: { level: debug }
`),
    );
    expect(config.upload).toEqual({
      concurrency: 16,
      part_size: 64 * 1024 ** 2,
      bandwidth: 4 * 1024 ** 2,
      stall_timeout: 120,
      retry_initial: 0.5,
      retry_max: 600,
      drain_timeout: 0,
    });
    expect(config).toMatchObject({ after_upload: 'move', after_upload_dir: '/srv/vms/uploaded' });
    expect(config.retention).toEqual({ delete_uploaded_after: 604800 });
    expect(config.log.level).toBe('debug');
  });

  it('resolves relative paths against the configuration file directory', () => {
    const config = load(minimalWith('ledger: { path: state/ledger.db }\n').replace('root: /srv/vms/exports', 'root: ./exports'));
    expect(config.watch.root).toBe('/etc/vms-uplink/exports');
    expect(config.ledger.path).toBe('/etc/vms-uplink/state/ledger.db');
  });

  it('valt template and share', () => {
    const config = load(`
watch: { root: /srv/x }
targets:
  v:
    type: valt
    base_url: https://valt.example.com/api/v3
    auth: { bearer: x }
    template: { 1: "Field Value 1", "2": 42 }
    share: { users: [1, 2, 3] }
`);
    expect(target(config, 'v', 'valt')).toMatchObject({
      template: { '1': 'Field Value 1', '2': '42' },
      share: { users: [1, 2, 3] },
    });
  });
});

describe('${NAME} substitution', () => {
  it('replaces variables inside any string, with fallbacks and escapes', () => {
    const config = load(
      `
watch: { root: "\${EXPORTS}/incidents", poll: "\${POLL}" }
upload: { part_size: "\${PART:-32MiB}", concurrency: "\${CONC}" }
targets:
  alo:
    type: alo
    base_url: "https://\${ALO_HOST}/v1"
    auth: { header: X-Api-Key, value: "pre-$\${LITERAL}-\${KEY}" }
`,
      { env: { EXPORTS: '/mnt/nvr', POLL: 'true', CONC: '8', ALO_HOST: 'api.alo.ai', KEY: 'k3y' } },
    );
    expect(config.watch.root).toBe('/mnt/nvr/incidents');
    expect(config.watch.poll).toBe(true);
    expect(config.upload.part_size).toBe(32 * 1024 ** 2);
    expect(config.upload.concurrency).toBe(8);
    const alo = target(config, 'alo', 'alo');
    expect(alo.base_url).toBe('https://api.alo.ai/v1');
    expect(headerValueOf(alo.auth)).toBe('pre-${LITERAL}-k3y');
  });

  it('reports every unset variable at its YAML path', () => {
    const problems = problemsOf(() => load(CONTRACT_EXAMPLE, { files: CONTRACT_FILES }));
    expect(problems).toEqual([
      'targets.alo.auth.bearer: environment variable ALO_TOKEN is not set',
      'targets.truvideo.auth.login.body.apiKey: environment variable TRUVIDEO_KEY is not set',
      'targets.valt.auth.login.body.password: environment variable VALT_PASSWORD is not set',
    ]);
  });

  it('does not pile a schema complaint on top of an unset variable', () => {
    const problems = problemsOf(() => load(MINIMAL.replace('https://api.alo.ai/v1', '${ALO_URL}')));
    expect(problems).toEqual(['targets.alo.base_url: environment variable ALO_URL is not set']);
  });

  it('refuses malformed references', () => {
    const problems = problemsOf(() => load(MINIMAL.replace('t0ken-alo', '"${ALO TOKEN}${UNTERMINATED"')));
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/^targets\.alo\.auth\.bearer: invalid environment variable reference/);
    expect(problems[1]).toMatch(/^targets\.alo\.auth\.bearer: unterminated \$\{/);
  });
});

describe('*_file secrets', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vms-uplink-config-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('reads real files, trimming the trailing newline, relative to the configuration file', () => {
    fs.writeFileSync(path.join(tmp, 'alo_token'), 'file-secret\r\n');
    fs.mkdirSync(path.join(tmp, 'creds'), { recursive: true });
    fs.writeFileSync(path.join(tmp, 'creds', 'api'), 'api-file-secret\n');
    const file = path.join(tmp, 'config.yaml');
    fs.writeFileSync(
      file,
      MINIMAL.replace('{ bearer: t0ken-alo }', `{ bearer_file: ${path.join(tmp, 'alo_token')} }`) +
        'api: { listen: "9420", token_file: creds/api }\n',
    );
    const config = loadConfig(file, {});
    const alo = target(config, 'alo', 'alo');
    expect(bearerOf(alo.auth)).toBe('file-secret');
    expect(config.api?.token_file?.reveal()).toBe('api-file-secret');
  });

  it('takes the file path from the environment (systemd credentials)', () => {
    const config = load(MINIMAL.replace('{ bearer: t0ken-alo }', '{ bearer_file: "${CREDENTIALS_DIRECTORY}/alo" }'), {
      env: { CREDENTIALS_DIRECTORY: '/run/credentials/vms-uplink.service' },
      files: { '/run/credentials/vms-uplink.service/alo': 'cred\n' },
    });
    const alo = target(config, 'alo', 'alo');
    expect(bearerOf(alo.auth)).toBe('cred');
  });

  it('does not substitute variables inside the file', () => {
    const config = load(MINIMAL.replace('{ bearer: t0ken-alo }', '{ bearer_file: /s/alo }'), { files: { '/s/alo': 'a${B}c' } });
    const alo = target(config, 'alo', 'alo');
    expect(bearerOf(alo.auth)).toBe('a${B}c');
  });

  it('names the unreadable file and the errno code at the key', () => {
    const problems = problemsOf(() => load(MINIMAL.replace('{ bearer: t0ken-alo }', '{ bearer_file: /run/missing/alo }')));
    expect(problems).toEqual(['targets.alo.auth.bearer_file: cannot read /run/missing/alo (ENOENT: no such file)']);
  });

  it('refuses an empty file', () => {
    const problems = problemsOf(() =>
      load(MINIMAL.replace('{ bearer: t0ken-alo }', '{ bearer_file: /s/alo }'), { files: { '/s/alo': '\n\n' } }),
    );
    expect(problems).toEqual(['targets.alo.auth.bearer_file: /s/alo is empty']);
  });

  it('reads a login body from a JSON file and never quotes it in a problem', () => {
    const yaml = (file: string) =>
      MINIMAL.replace('{ bearer: t0ken-alo }', `{ login: { url: "https://x.example.com/login", body_file: ${file} } }`);
    const config = load(yaml('/s/body.json'), { files: { '/s/body.json': '{ "user": "u", "password": "pw-123" }\n' } });
    const auth = target(config, 'alo', 'alo').auth as LoginAuth;
    expect(JSON.parse(auth.login.body_file!.reveal())).toEqual({ user: 'u', password: 'pw-123' });

    const problems = problemsOf(() => load(yaml('/s/bad.json'), { files: { '/s/bad.json': 'password=pw-456' } }));
    expect(problems).toEqual(['targets.alo.auth.login.body_file: the file does not hold valid JSON']);
    expect(problems.join('\n')).not.toContain('pw-456');
  });
});

describe('auth', () => {
  const withAuth = (auth: string) =>
    load(`
watch: { root: /srv/x }
targets:
  t:
    type: aionvision
    base_url: https://api.example.com
    auth: ${auth}
`).targets.t?.auth;
  const authProblems = (auth: string) => problemsOf(() => withAuth(auth)).map((p) => p.replace(/^targets\.t\.auth/, 'auth'));

  it('bearer', () => {
    expect(bearerOf(withAuth('{ bearer: abc }'))).toBe('abc');
  });

  it('header with value or value_file', () => {
    const auth = withAuth('{ header: X-API-Key, value: k }');
    expect(auth).toMatchObject({ header: 'X-API-Key' });
    expect(headerValueOf(auth)).toBe('k');
    expect(authProblems('{ header: X-API-Key }')).toEqual(['auth.value: required (or value_file)']);
    expect(authProblems('{ header: "Bad Header", value: k }')).toEqual(['auth.header: is not a valid HTTP header name']);
  });

  it('login, sent as bearer by default, or as a query parameter or a header', () => {
    const login = '{ url: "https://x.example.com/login", body: { user: u, n: 1 }, token_field: data.token }';
    expect(withAuth(`{ login: ${login} }`)).toMatchObject({ login: { url: 'https://x.example.com/login', token_field: 'data.token' } });
    const defaultField = withAuth('{ login: { url: "https://x.example.com/login", body: {} } }') as LoginAuth;
    expect(defaultField.login.token_field).toBe('accessToken');
    expect(defaultField.login.body!.reveal()).toBe('{}');
    expect(withAuth(`{ login: ${login}, send_as: { query: access_token } }`)).toMatchObject({ send_as: { query: 'access_token' } });
    expect(withAuth(`{ login: ${login}, send_as: { header: X-Auth-Token } }`)).toMatchObject({ send_as: { header: 'X-Auth-Token' } });
    expect(authProblems(`{ login: ${login}, send_as: { query: a, header: b } }`)).toEqual([
      'auth.send_as: give either query or header, not both',
    ]);
    expect(authProblems('{ login: { url: "nope" } }')).toEqual(['auth.login.url: Invalid URL', 'auth.login.body: required (or body_file)']);
  });

  it('refuses two forms at once, both a value and its file, and nothing at all', () => {
    expect(authProblems('{ bearer: a, header: X-Key, value: b }')[0]).toMatch(/^auth: use one form only/);
    expect(authProblems('{ bearer: a, bearer_file: /x }')).toEqual([
      'auth: give either bearer or bearer_file, not both',
      'auth.bearer_file: cannot read /x (ENOENT: no such file)',
    ]);
    expect(authProblems('{ token: a }')[0]).toMatch(/^auth: expected one of \{ bearer \}/);
    expect(authProblems('"abc"')[0]).toMatch(/^auth: expected one of .* got a string/);
    expect(authProblems('{ bearer: "two\\nlines" }')).toEqual(['auth.bearer: must be a single line']);
  });

  it('reports a missing auth', () => {
    const problems = problemsOf(() => load('watch: { root: /x }\ntargets: { t: { type: alo, base_url: "https://a.example.com" } }\n'));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^targets\.t\.auth: required: one of/);
  });
});

describe('problems', () => {
  it('reports every mistake at once, one line each, in file order', () => {
    const problems = problemsOf(() =>
      load(`
watch:
  root: /srv/vms/exports
  settle_seconds: soon
upload:
  concurrency: 100
targets:
  alo:
    type: alo
    base_url: not a url
    auth: { bearer: x }
`),
    );
    expect(problems).toEqual([
      expect.stringMatching(/^watch\.settle_seconds: invalid duration "soon"/),
      'upload.concurrency: must be between 1 and 64',
      'targets.alo.base_url: Invalid URL',
    ]);
  });

  it('puts them in the ConfigError message after the file path', () => {
    try {
      load(MINIMAL.replace('https://api.alo.ai/v1', 'ftp://api.alo.ai'));
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).message).toBe(`${CONFIG_PATH}:\n  targets.alo.base_url: must be an http:// or https:// URL`);
    }
  });

  it('unknown keys anywhere, with a suggestion when one is close', () => {
    const problems = problemsOf(() =>
      load(`
watch:
  root: /srv/x
  settle_secnds: 5
uplaod: {}
targets:
  alo:
    type: alo
    base_url: https://a.example.com
    auth: { bearer: x, extra: 1 }
    multipart_treshold: 5MiB
`),
    );
    expect(problems).toEqual([
      'watch.settle_secnds: unknown key (did you mean settle_seconds?)',
      'uplaod: unknown key (did you mean upload?)',
      'targets.alo.auth.extra: unknown key',
      'targets.alo.multipart_treshold: unknown key (did you mean multipart_threshold?)',
    ]);
  });

  it('bad cron expressions by list index', () => {
    const problems = problemsOf(() =>
      load(
        minimalWith(`
upload:
  bandwidth:
    - { cron: "0 7 * * 1-5", limit: 2MiB/s }
    - { cron: "61 * * * *", limit: 1MiB/s }
    - { cron: "* * *", limit: nope }
`),
      ),
    );
    expect(problems).toHaveLength(3);
    expect(problems[0]).toMatch(/^upload\.bandwidth\[1\]\.cron: invalid cron expression "61 \* \* \* \*"/);
    expect(problems[1]).toMatch(/^upload\.bandwidth\[2\]\.cron: invalid cron expression/);
    expect(problems[2]).toMatch(/^upload\.bandwidth\[2\]\.limit: invalid rate "nope"/);
  });

  it('bandwidth of the wrong shape', () => {
    expect(problemsOf(() => load(minimalWith('upload: { bandwidth: [] }\n')))).toEqual([
      'upload.bandwidth: must list at least one { cron, limit } entry',
    ]);
    expect(problemsOf(() => load(minimalWith('upload: { bandwidth: { limit: 1MiB/s } }\n')))[0]).toMatch(
      /^upload\.bandwidth: expected a rate/,
    );
  });

  it('after_upload: move needs after_upload_dir, outside watch.root', () => {
    expect(problemsOf(() => load(minimalWith('after_upload: move\n')))).toEqual(['after_upload_dir: required when after_upload is move']);
    expect(problemsOf(() => load(minimalWith('after_upload: move\nafter_upload_dir: /srv/vms/exports/done\n')))).toEqual([
      'after_upload_dir: must be outside watch.root (moved incidents would be picked up again)',
    ]);
    expect(problemsOf(() => load(minimalWith('after_upload: keep\nafter_upload_dir: /srv/done\n')))).toEqual([
      'after_upload_dir: only used with after_upload: move',
    ]);
    expect(problemsOf(() => load(minimalWith('after_upload: archive\n')))).toEqual(['after_upload: must be one of keep, delete, move']);
  });

  it('targets: type, name, emptiness', () => {
    expect(problemsOf(() => load('watch: { root: /x }\ntargets: { s3: { type: s3, base_url: "https://a" } }\n'))).toEqual([
      'targets.s3.type: unknown target type "s3" (valid types: alo, aionvision, truvideo, valt)',
    ]);
    expect(problemsOf(() => load('watch: { root: /x }\ntargets: { s3: { base_url: "https://a" } }\n'))).toEqual([
      'targets.s3.type: required (valid types: alo, aionvision, truvideo, valt)',
    ]);
    expect(problemsOf(() => load('watch: { root: /x }\ntargets: {}\n'))).toEqual(['targets: at least one target is required']);
    expect(problemsOf(() => load(MINIMAL.replace('  alo:\n', '  "my alo":\n')))[0]).toMatch(/^targets\.my alo: invalid target name/);
  });

  it('required sections and wrong types', () => {
    expect(problemsOf(() => load('log: { level: loud }\n'))).toEqual([
      'watch: required',
      'targets: required',
      'log.level: must be one of trace, debug, info, warn, error, fatal',
    ]);
    expect(problemsOf(() => load(minimalWith('upload: 4\n')))).toEqual(['upload: expected a mapping, got a number']);
    expect(problemsOf(() => load(minimalWith('upload: { part_size: 1MiB }\n')))).toEqual(['upload.part_size: must be at least 5MiB']);
    expect(problemsOf(() => load(minimalWith('upload: { part_size: 6GiB }\n')))).toEqual(['upload.part_size: must be at most 5GiB']);
    expect(problemsOf(() => load(minimalWith('upload: { retry_initial: 10m, retry_max: 1m }\n')))).toEqual([
      'upload.retry_max: must be at least retry_initial (600 s)',
    ]);
    expect(problemsOf(() => load(minimalWith('upload: { stall_timeout: 0 }\n')))).toEqual([
      'upload.stall_timeout: must be more than 0 seconds',
    ]);
    expect(problemsOf(() => load('- a\n- b\n'))).toEqual(['the configuration must be a mapping of settings, got a list']);
  });

  it('api: listen forms and the token it needs', () => {
    expect(load(minimalWith('api: { listen: 9420, token: t }\n')).api).toMatchObject({ listen: '127.0.0.1:9420' });
    expect(load(minimalWith('api: { listen: ":9421", token: t }\n')).api).toMatchObject({ listen: '127.0.0.1:9421' });
    expect(load(minimalWith('api: { listen: "0.0.0.0:80", token: t }\n')).api).toMatchObject({ listen: '0.0.0.0:80' });
    expect(load(minimalWith('api: { listen: "[::1]:9420", token: t }\n')).api).toMatchObject({ listen: '[::1]:9420' });
    expect(problemsOf(() => load(minimalWith('api: { listen: 127.0.0.1:9420 }\n')))).toEqual([
      'api.token: required when listen is set (or token_file)',
    ]);
    expect(problemsOf(() => load(minimalWith('api: { listen: "host:99999", token: t }\n')))).toEqual([
      'api.listen: the port must be between 0 and 65535',
    ]);
  });

  it('YAML syntax errors name the line and column without quoting the file', () => {
    const problems = problemsOf(() => load('watch:\n  root: /x\ntargets:\n  alo: { type: alo, auth: { bearer: "s3cret-in-yaml }\n'));
    expect(problems.length).toBeGreaterThan(0);
    expect(problems[0]).toMatch(/^line \d+, column \d+: /);
    expect(problems.join('\n')).not.toContain('s3cret-in-yaml');
    expect(problemsOf(() => load('a: 1\na: 2\n'))).toEqual(['line 2, column 1: Map keys must be unique']);
  });

  it('an empty or missing file', () => {
    expect(problemsOf(() => load('# nothing\n'))).toEqual(['the file is empty']);
    const vol = Volume.fromJSON({});
    try {
      loadConfig('/etc/vms-uplink/none.yaml', {}, vol.readFileSync.bind(vol));
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).problems).toEqual(['cannot read the configuration file (ENOENT: no such file)']);
      expect((err as ConfigError).message.startsWith('/etc/vms-uplink/none.yaml:')).toBe(true);
    }
    expect(() => loadConfig(path.join(os.tmpdir(), 'vms-uplink-no-such-config.yaml'), {})).toThrow(ConfigError);
  });

  it('problems never quote a secret value', () => {
    const problems = problemsOf(() =>
      load(minimalWith('api: { listen: 9420, token: "multi\\nline-secret-value" }\n').replace('t0ken-alo', '"bad\\nalo-secret-value"')),
    );
    expect(problems).toEqual(['targets.alo.auth.bearer: must be a single line', 'api.token: must be a single line']);
  });
});

describe('resolveConfigPath', () => {
  it('--config, then $VMS_UPLINK_CONFIG, then /etc/vms-uplink/config.yaml', () => {
    expect(resolveConfigPath('/a.yaml', { VMS_UPLINK_CONFIG: '/b.yaml' })).toBe('/a.yaml');
    expect(resolveConfigPath(undefined, { VMS_UPLINK_CONFIG: '/b.yaml' })).toBe('/b.yaml');
    expect(resolveConfigPath(undefined, {})).toBe('/etc/vms-uplink/config.yaml');
    expect(DEFAULT_CONFIG_PATH).toBe('/etc/vms-uplink/config.yaml');
  });
});

describe('parseConfig and resolveConfig', () => {
  it('accept text and objects without a file', () => {
    const fromText = parseConfig(MINIMAL, { env: {} });
    expect(fromText.watch.root).toBe('/srv/vms/exports');
    const fromObject = resolveConfig(
      { watch: { root: '/srv/y' }, targets: { a: { type: 'alo', base_url: 'https://a.example.com', auth: { bearer: '${T}' } } } },
      { env: { T: 'tok' } },
    );
    const a = target(fromObject, 'a', 'alo');
    expect(bearerOf(a.auth)).toBe('tok');
  });
});

describe('describeConfig', () => {
  it('never shows a secret', () => {
    const config = load(
      CONTRACT_EXAMPLE.replace(
        'url: "https://auth.truvideo.com/token"',
        'url: "https://auth.truvideo.com/token?client=a&key=url-secret-6"',
      ).replace('auth: { bearer: "${ALO_TOKEN}" }', 'auth: { header: X-Api-Key, value: "${ALO_TOKEN}" }'),
      { env: CONTRACT_ENV, files: CONTRACT_FILES },
    );
    const out = describeConfig(config);
    for (const secret of [...Object.values(SECRETS), 'url-secret-6']) expect(out).not.toContain(secret);
    // The whole login body is masked, user names included.
    expect(out).not.toMatch(/username/);
    expect(out).toContain('https://auth.truvideo.com/token?client=a&key=***');
    expect(out).toContain('base_url: https://api.alo.ai/v1');
    expect(out).toContain('part_size: 16777216');
    expect(out).toContain('"***"');
  });

  it('masks credentials in URLs and leaves the rest byte for byte', () => {
    expect(redactUrl('https://h/p?access_token=abc&x=1')).toBe('https://h/p?access_token=***&x=1');
    expect(redactUrl('https://h/p?X-Amz-Signature=abc&X-Amz-Expires=7200')).toBe('https://h/p?X-Amz-Signature=***&X-Amz-Expires=7200');
    expect(redactUrl('https://user:pass@h/p?Token=a#frag')).toBe('https://user:***@h/p?Token=***#frag');
    expect(redactUrl('https://h/a%20b?q=1')).toBe('https://h/a%20b?q=1');
  });
});
