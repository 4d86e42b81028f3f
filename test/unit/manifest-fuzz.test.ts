/**
 * Manifest fuzzing (issue 4, item 4): thousands of generated and mutated manifests — broken JSON and
 * YAML, wrong types, huge strings, unicode, deep nesting, duplicate ids, hostile paths — through the
 * parser the daemon uses (parseManifest) and the path rules it applies to every `file`/`thumbnail`
 * (resolveExportPath) against a real folder with a secret file next to it.
 *
 * What must hold for every input: parseManifest returns (it never throws, and never needs its
 * last-resort "internal error"), either accepting the manifest or giving problems that each name a
 * field (`videos[1].id: …`) or a place in the text (`line 3, column 7`); and no path it accepts
 * ever resolves outside the incident folder. The watcher prefixes each problem with the file's
 * path (checked end to end in test/e2e/hostile-files.test.ts).
 */
import { mkdir, realpath, symlink, writeFile } from 'node:fs/promises';
import { join, relative, isAbsolute, sep } from 'node:path';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_ID_LENGTH, MAX_PROBLEMS, parseManifest, type ManifestResult } from '../../src/watch/manifest.js';
import { resolveExportPath } from '../../src/watch/paths.js';
import { mp4Header, tempDir } from '../support/files.js';

/** Runs per property; the total is printed at the end (the issue's "manifests fuzzed"). */
const RUNS = 500;
const counts = { parsed: 0, accepted: 0, paths: 0 };
const NAMES = ['incident.json', 'incident.yaml', 'incident.yml'] as const;

// ---------------------------------------------------------------------------------------------
// What every answer must look like

const FIELD = /^(\(root\)|incident(\.[a-z_]+)?|videos(\[\d+\](\.[a-z_]+(\[\d+\])?)?)?): \S/;
const PLACE = /\bline \d+, column \d+\b/;
const WHOLE_FILE = [
  /^manifest is empty$/,
  /^manifest is larger than \d+ MiB$/,
  /^YAML has \d+ documents; a manifest must be exactly one$/,
  /^nesting deeper than \d+ levels/,
  /^manifest has more than \d+ (YAML )?values/,
  /^unsupported YAML value of type \S+$/,
  /^YAML: /,
  /^… and \d+ more problems$/,
];

function parse(text: string, name: string): ManifestResult {
  counts.parsed++;
  let result: ManifestResult;
  try {
    result = parseManifest(text, name);
  } catch (err) {
    throw new Error(`parseManifest threw on ${JSON.stringify(text.slice(0, 200))}: ${String(err)}`, { cause: err });
  }
  expectClear(result, text);
  return result;
}

function expectClear(result: ManifestResult, text: string): void {
  if (result.ok) {
    counts.accepted++;
    expect(typeof result.manifest.incident.id).toBe('string');
    expect(Array.isArray(result.manifest.videos)).toBe(true);
    return;
  }
  const shown = JSON.stringify(text.slice(0, 300));
  expect(result.problems.length, shown).toBeGreaterThan(0);
  expect(result.problems.length, shown).toBeLessThanOrEqual(MAX_PROBLEMS + 1);
  for (const problem of result.problems) {
    expect(typeof problem, shown).toBe('string');
    expect(problem, shown).not.toMatch(/internal error/);
    // One log line each: a huge value is quoted shortened, never whole.
    expect(problem.length, shown).toBeLessThan(600);
    const clear = FIELD.test(problem) || PLACE.test(problem) || WHOLE_FILE.some((re) => re.test(problem));
    expect(clear, `${problem}\n(from ${shown})`).toBe(true);
  }
}

// ---------------------------------------------------------------------------------------------
// A real incident folder, with a secret file outside it wherever a hostile path could lead

let tmp: { path: string; cleanup: () => Promise<void> };
let folder: string;
let realFolder: string;

beforeAll(async () => {
  tmp = await tempDir('vms-uplink-fuzz-');
  const root = join(tmp.path, 'exports');
  folder = join(root, 'site', 'incident');
  await mkdir(join(folder, 'sub'), { recursive: true });
  const video = Buffer.concat([mp4Header(), Buffer.alloc(64)]);
  for (const name of ['cam01.mp4', 'sub/cam02.mp4', '%2e%2e', '..foo.mp4', 'a b.mp4', 'ünï.mp4'])
    await writeFile(join(folder, name), video);
  // Bait: a file named secret.mp4 at every level above the folder, and links leading to them.
  for (const dir of [tmp.path, root, join(root, 'site')]) await writeFile(join(dir, 'secret.mp4'), video);
  await mkdir(join(tmp.path, 'outside'), { recursive: true });
  await writeFile(join(tmp.path, 'outside', 'secret.mp4'), video);
  await symlink(join(tmp.path, 'outside', 'secret.mp4'), join(folder, 'link.mp4'));
  await symlink(join(tmp.path, 'outside'), join(folder, 'linkdir'));
  await symlink('.', join(folder, 'self'));
  await symlink('loop', join(folder, 'loop'));
  realFolder = await realpath(folder);
});

afterAll(async () => {
  await tmp?.cleanup();
  console.log(
    `manifest fuzzing: ${counts.parsed} manifests parsed (${counts.accepted} accepted, the rest refused with a clear error), ${counts.paths} file/thumbnail paths resolved`,
  );
});

async function expectPathStaysInside(value: string): Promise<void> {
  counts.paths++;
  const where = await resolveExportPath(folder, value);
  if (where.kind === 'ok') {
    const rel = relative(realFolder, where.path);
    expect(rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel), `${JSON.stringify(value)} → ${where.path}`).toBe(
      false,
    );
    expect(where.path).not.toContain('secret');
  } else if (where.kind === 'refused') {
    // The reason names the value as written.
    expect(where.reason.startsWith(`file ${JSON.stringify(value)} `)).toBe(true);
  }
}

// ---------------------------------------------------------------------------------------------
// Generators

/** Path pieces an attacker (or a confused exporter) would try. */
const pathPiece = fc.constantFrom(
  '..',
  '.',
  '',
  'cam01.mp4',
  'sub',
  'cam02.mp4',
  'secret.mp4',
  '%2e%2e',
  '%2E%2E',
  '%2e%2e%2f',
  '..%2f',
  '%252e%252e',
  '..\\',
  '\\',
  'C:',
  'c:\\windows',
  '\0',
  'cam01.mp4\0.jpg',
  '～',
  '\uff0e\uff0e',
  '\u2024\u2024',
  '..foo.mp4',
  '...',
  'link.mp4',
  'linkdir',
  'self',
  'loop',
  '.hidden',
  'clip.part',
  'x.tmp',
  'a b.mp4',
  'ünï.mp4',
  '/',
  '//',
  '~',
  '$HOME',
  'file:',
  'file:///etc/passwd',
  '/etc/passwd',
  '\\\\server\\share',
  '\n',
  ' ',
  '..\u0000',
  'ȧ'.normalize('NFD'),
);
const hostilePath = fc.oneof(
  fc.array(pathPiece, { minLength: 1, maxLength: 6 }).map((ps) => ps.join('/')),
  fc.array(pathPiece, { minLength: 1, maxLength: 6 }).map((ps) => ps.join('\\')),
  fc.array(pathPiece, { minLength: 1, maxLength: 8 }).map((ps) => ps.join('')),
  fc.string({ unit: fc.constantFrom('.', '/', '\\', '%', '2', 'e', 'E', 'f', '\0', ':', 'a', 's'), maxLength: 24 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
);

/** Values of the wrong type for a field that wants `kind`. */
function wrongType(kind: 'string' | 'number' | 'array'): fc.Arbitrary<unknown> {
  const all = [
    fc.integer(),
    // NaN and ±Infinity become null in JSON, and null counts as absent.
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.boolean(),
    fc.constant({}),
    fc.array(fc.integer(), { maxLength: 3 }),
    fc.dictionary(fc.string({ maxLength: 4 }), fc.integer(), { maxKeys: 3 }),
    fc.string({ maxLength: 8 }),
  ];
  const wrong = all.filter(
    (_, i) => !((kind === 'number' && (i === 0 || i === 1)) || (kind === 'array' && i === 4) || (kind === 'string' && i === 6)),
  );
  return fc.oneof(...wrong);
}

const validId = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9 ._:@-]{0,60}$/),
  fc.uuid(),
  // Unicode of any kind, as long as it is not a control character, a lone surrogate or blank.
  fc
    .string({ unit: 'grapheme', minLength: 1, maxLength: 30 })
    .filter((s) => s.trim() !== '' && !/[\p{Cc}\p{Cs}]/u.test(s) && s !== '.' && s !== '..' && [...s].length <= MAX_ID_LENGTH),
);
const invalidId = fc.oneof(
  fc.constantFrom(
    '',
    '   ',
    '.',
    '..',
    'a\u0000b',
    'tab\there',
    'line\nbreak',
    '\u007f',
    'x'.repeat(MAX_ID_LENGTH + 1),
    '\ud800',
    'a\udfffb',
  ),
  fc
    .string({ minLength: MAX_ID_LENGTH + 1, maxLength: MAX_ID_LENGTH + 50, unit: 'grapheme-ascii' })
    .filter((s) => s.length > MAX_ID_LENGTH),
  wrongType('string'),
);

const timestamp = fc.date({ min: new Date('1990-01-01'), max: new Date('2100-01-01'), noInvalidDate: true }).map((d) => d.toISOString());
const anyText = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
);

interface Field {
  value: unknown;
  /** The field path the parser must name, when the value is wrong. */
  bad: string | null;
}

/** A field that is absent, valid, null, or of the wrong type; `bad` says which field is wrong. */
function field(
  path: string,
  valid: fc.Arbitrary<unknown>,
  kind: 'string' | 'number' | 'array',
  invalid?: fc.Arbitrary<unknown>,
): fc.Arbitrary<Field | undefined> {
  const wrongs = invalid ? fc.oneof(wrongType(kind), invalid) : wrongType(kind);
  return fc.oneof(
    // Wrong values are rare enough per field that about half the manifests are valid as a whole.
    { weight: 6, arbitrary: fc.constant(undefined) },
    { weight: 12, arbitrary: valid.map((value) => ({ value, bad: null })) },
    { weight: 2, arbitrary: fc.constant({ value: null, bad: null }) },
    { weight: 1, arbitrary: wrongs.map((value) => ({ value, bad: path })) },
  );
}

interface Model {
  raw: Record<string, unknown>;
  /** Field paths the parser must name; empty: it must accept. */
  expected: string[];
  /** Paths the videos name, for the path check. */
  paths: string[];
}

const videoModel = (index: number) => {
  const p = `videos[${index}]`;
  return fc.record({
    id: fc.oneof(
      { weight: 40, arbitrary: validId.map((v) => ({ value: v, bad: null as string | null })) },
      { weight: 1, arbitrary: invalidId.map((v) => ({ value: v, bad: `${p}.id` })) },
      { weight: 1, arbitrary: fc.constant(undefined) },
    ),
    file: field(`${p}.file`, fc.oneof(fc.constantFrom('cam01.mp4', 'sub/cam02.mp4', 'missing.mp4'), hostilePath), 'string'),
    thumbnail: field(`${p}.thumbnail`, hostilePath, 'string'),
    camera_id: field(`${p}.camera_id`, anyText, 'string'),
    camera_name: field(`${p}.camera_name`, anyText, 'string'),
    camera_latitude: field(`${p}.camera_latitude`, fc.double({ noNaN: true, noDefaultInfinity: true }), 'number'),
    started_at: field(`${p}.started_at`, timestamp, 'string', fc.constantFrom('yesterday', '', '2024-13-45T99:99:99Z')),
    errors: field(`${p}.errors`, fc.array(anyText, { maxLength: 3 }), 'array', fc.array(fc.integer(), { minLength: 1, maxLength: 2 })),
    extra: fc.option(fc.jsonValue({ maxDepth: 3 }), { nil: undefined }),
  });
};

const manifestModel: fc.Arbitrary<Model> = fc
  .record({
    incidentId: fc.oneof(
      { weight: 20, arbitrary: validId.map((v) => ({ value: v, bad: null as string | null })) },
      { weight: 1, arbitrary: invalidId.map((v) => ({ value: v, bad: 'incident.id' })) },
      { weight: 1, arbitrary: fc.constant(undefined) },
    ),
    title: field('incident.title', anyText, 'string'),
    incident_at: field('incident.incident_at', timestamp, 'string', fc.constantFrom('not a date', '2024-02-30T25:00:00Z')),
    latitude: field('incident.latitude', fc.double({ noNaN: true, noDefaultInfinity: true }), 'number'),
    videoCount: fc.nat({ max: 4 }),
    duplicate: fc.nat({ max: 5 }).map((n) => n === 0),
    seed: fc.nat(),
  })
  .chain((m) => fc.tuple(fc.constant(m), fc.tuple(...Array.from({ length: m.videoCount }, (_, i) => videoModel(i)))))
  .map(([m, videos]) => {
    const expected: string[] = [];
    const paths: string[] = [];
    const put = (obj: Record<string, unknown>, key: string, f: Field | undefined): void => {
      if (f === undefined) return;
      obj[key] = f.value;
      if (f.bad) expected.push(f.bad);
    };
    const incident: Record<string, unknown> = {};
    if (m.incidentId === undefined) expected.push('incident.id');
    put(incident, 'id', m.incidentId);
    put(incident, 'title', m.title);
    put(incident, 'incident_at', m.incident_at);
    put(incident, 'latitude', m.latitude);
    const seenIds = new Map<unknown, number>();
    const rawVideos = videos.map((v, i) => {
      const raw: Record<string, unknown> = {};
      if (v.extra !== undefined) raw.vendor_extra = v.extra;
      const before = expected.length;
      if (v.id === undefined) expected.push(`videos[${i}].id`);
      put(raw, 'id', v.id);
      for (const key of ['file', 'thumbnail', 'camera_id', 'camera_name', 'camera_latitude', 'started_at', 'errors'] as const)
        put(raw, key, v[key]);
      const fieldsOk =
        expected.slice(before).every((p) => p === `videos[${i}].id`) &&
        [v.file, v.thumbnail, v.camera_id, v.camera_name, v.camera_latitude, v.started_at, v.errors].every((f) => !f?.bad);
      const hasFile = typeof raw.file === 'string';
      const hasErrors = Array.isArray(raw.errors) && raw.errors.length > 0 && !v.errors?.bad;
      if (fieldsOk && !hasFile && !hasErrors) expected.push(`videos[${i}]`);
      if (typeof raw.file === 'string') paths.push(raw.file);
      if (typeof raw.thumbnail === 'string') paths.push(raw.thumbnail);
      // Duplicates count only between videos that are valid on their own.
      const idOk = v.id !== undefined && !v.id.bad;
      if (idOk && expected.length === before) {
        const first = seenIds.get(v.id!.value);
        if (first !== undefined) expected.push(`videos[${i}].id`);
        else seenIds.set(v.id!.value, i);
      }
      return raw;
    });
    if (m.duplicate && rawVideos.length > 0 && m.incidentId !== undefined) {
      // The same video again at the end: always a duplicate id (or as wrong as the original).
      const copy = rawVideos[m.seed % rawVideos.length]!;
      const i = rawVideos.length;
      const original = expected.filter(
        (p) => p === `videos[${m.seed % rawVideos.length}]` || p.startsWith(`videos[${m.seed % rawVideos.length}].`),
      );
      rawVideos.push(copy);
      if (original.length > 0) expected.push(...original.map((p) => p.replace(/^videos\[\d+\]/, `videos[${i}]`)));
      else expected.push(`videos[${i}].id`);
    }
    return { raw: { incident, videos: rawVideos }, expected, paths };
  });

/** A manifest in any of the three names; YAML written block-style or as flow (JSON is YAML too). */
const serialised = (raw: unknown) =>
  fc.oneof(
    fc.nat(4).map((indent) => ({ name: 'incident.json', text: JSON.stringify(raw, null, indent) })),
    fc
      .tuple(fc.constantFrom('incident.yaml', 'incident.yml'), fc.boolean())
      .map(([name, flow]) => ({ name, text: flow ? JSON.stringify(raw) : stringify(raw) })),
  );

/** Byte-level damage: cut, splice, duplicate, insert noise. */
const mutation = fc.oneof(
  fc.record({ kind: fc.constant('truncate' as const), at: fc.double({ min: 0, max: 1, noNaN: true }) }),
  fc.record({
    kind: fc.constant('delete' as const),
    at: fc.double({ min: 0, max: 1, noNaN: true }),
    length: fc.integer({ min: 1, max: 20 }),
  }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: fc.double({ min: 0, max: 1, noNaN: true }),
    text: fc.oneof(
      fc.constantFrom(
        '{',
        '}',
        '[',
        ']',
        ',',
        ':',
        '"',
        "'",
        '\\',
        '\0',
        '\n',
        '  ',
        '- ',
        '&a',
        '*a',
        '!!binary',
        '!!js/function',
        '<<',
        '---\n',
        '#',
        '%YAML 1.1\n',
        '\ufeff',
        '\ud800',
        'null',
        '1e999',
        '-0',
        '"..\\/..\\/"',
      ),
      fc.string({ unit: 'binary', maxLength: 8 }),
    ),
  }),
  fc.record({
    kind: fc.constant('duplicate' as const),
    at: fc.double({ min: 0, max: 1, noNaN: true }),
    length: fc.integer({ min: 1, max: 60 }),
  }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(text: string, ms: Mutation[]): string {
  let t = text;
  for (const m of ms) {
    const at = Math.floor(m.at * t.length);
    if (m.kind === 'truncate') t = t.slice(0, at);
    else if (m.kind === 'delete') t = t.slice(0, at) + t.slice(at + m.length);
    else if (m.kind === 'insert') t = t.slice(0, at) + m.text + t.slice(at);
    else t = t.slice(0, at) + t.slice(at, at + m.length) + t.slice(at);
  }
  return t;
}

// ---------------------------------------------------------------------------------------------

describe('manifest fuzzing (fast-check)', () => {
  it(`accepts exactly the valid generated manifests and names every wrong field (${RUNS} runs)`, async () => {
    await fc.assert(
      fc.asyncProperty(
        manifestModel.chain((model) => fc.tuple(fc.constant(model), serialised(model.raw))),
        async ([model, { name, text }]) => {
          const result = parse(text, name);
          if (model.expected.length === 0) {
            expect(result.ok, result.ok ? '' : result.problems.join('\n')).toBe(true);
            for (const p of model.paths) await expectPathStaysInside(p);
          } else {
            expect(result.ok, `expected problems at ${model.expected.join(', ')}`).toBe(false);
            const problems = result.ok ? [] : result.problems;
            if (problems.length < MAX_PROBLEMS) {
              for (const path of model.expected)
                expect(
                  problems.some((p) => p.startsWith(`${path}: `) || p.startsWith(`${path}[`)),
                  `${path} not named in:\n${problems.join('\n')}`,
                ).toBe(true);
            }
          }
        },
      ),
      { numRuns: RUNS },
    );
  });

  it(`never resolves a hostile file path outside the incident folder (${RUNS} runs)`, async () => {
    await fc.assert(
      fc.asyncProperty(hostilePath, async (p) => {
        // Through the parser first: any string is a valid `file`; the path rule decides.
        const result = parse(JSON.stringify({ incident: { id: 'i' }, videos: [{ id: 'v', file: p, thumbnail: p }] }), 'incident.json');
        expect(result.ok).toBe(true);
        if (result.ok) expect(result.manifest.videos[0]!.file).toBe(p);
        await expectPathStaysInside(p);
      }),
      { numRuns: RUNS },
    );
    // The classic ones, whatever the generator picked.
    for (const p of [
      '../secret.mp4',
      '../../secret.mp4',
      '../../../secret.mp4',
      'sub/../../secret.mp4',
      '..\\secret.mp4',
      'link.mp4',
      'linkdir/secret.mp4',
      '/etc/passwd',
      'C:\\secret.mp4',
      'cam01.mp4\0../secret.mp4',
      'self/../secret.mp4',
    ]) {
      counts.paths++;
      expect((await resolveExportPath(folder, p)).kind, p).toBe('refused');
    }
    // Percent-encoding is a name, not a traversal: `%2e%2e` is the file of that name inside the folder.
    expect(await resolveExportPath(folder, '%2e%2e')).toEqual({ kind: 'ok', path: join(realFolder, '%2e%2e') });
    expect((await resolveExportPath(folder, '%2e%2e/secret.mp4')).kind).toBe('missing');
  });

  it(`gives a clear error, never a throw, for mutated manifests (${RUNS} runs)`, () => {
    fc.assert(
      fc.property(
        manifestModel.chain((model) => serialised(model.raw)),
        fc.array(mutation, { minLength: 1, maxLength: 4 }),
        ({ name, text }, ms) => {
          parse(mutate(text, ms), name);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it(`gives a clear error for arbitrary JSON values and arbitrary text (${RUNS} runs each)`, () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 6 }), fc.constantFrom(...NAMES), (value, name) => {
        const text = name === 'incident.json' ? (JSON.stringify(value) ?? 'null') : stringify(value);
        parse(text, name);
        // And the same value as the incident or the videos.
        parse(JSON.stringify({ incident: value, videos: value }) ?? '', name);
      }),
      { numRuns: RUNS },
    );
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), fc.constantFrom(...NAMES), (text, name) => {
        parse(text, name);
      }),
      { numRuns: RUNS },
    );
  });

  it('handles deep nesting, in JSON and YAML, flow and block, without a stack overflow', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20_000 }),
        fc.constantFrom('json', 'yaml-flow', 'yaml-block', 'yaml-seq', 'incident-json'),
        (depth, shape) => {
          let text: string;
          let name = 'incident.yaml';
          if (shape === 'json' || shape === 'incident-json') {
            name = 'incident.json';
            const inner = '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
            text = shape === 'json' ? inner : `{"incident":{"id":"x","title":${inner}},"videos":[]}`;
          } else if (shape === 'yaml-flow') {
            text = `incident: { id: x }\nvideos: ${'['.repeat(depth)}1${']'.repeat(depth)}\n`;
          } else if (shape === 'yaml-block') {
            const d = Math.min(depth, 400);
            text = Array.from({ length: d }, (_, i) => `${' '.repeat(i)}k${i}:`).join('\n') + ' 1\n';
          } else {
            const d = Math.min(depth, 400);
            text = Array.from({ length: d }, (_, i) => `${'  '.repeat(i)}-`).join('\n') + ' 1\n';
          }
          const result = parse(text, name);
          if (depth > 64) expect(result.ok).toBe(false);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('refuses huge manifests and quotes huge values shortened', () => {
    const big = 'x'.repeat(4 * 1024 * 1024);
    for (const name of NAMES) {
      const r = parse(JSON.stringify({ incident: { id: 'i', title: big }, videos: [] }), name);
      expect(r).toEqual({ ok: false, problems: ['manifest is larger than 4 MiB'] });
    }
    // Just under the limit: accepted, the huge title kept whole.
    const title = '标'.repeat(1_000_000); // 3 MB of UTF-8
    const ok = parse(JSON.stringify({ incident: { id: 'i', title }, videos: [] }), 'incident.json');
    expect(ok.ok && ok.manifest.incident.title).toBe(title);
    // A huge wrong value is named, and quoted at most ~80 characters.
    const bad = parse(JSON.stringify({ incident: { id: 'i', incident_at: 'y'.repeat(1_000_000) }, videos: [] }), 'incident.json');
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(bad.problems[0]).toMatch(/^incident\.incident_at: Invalid timestamp "y{80}…"$/);
    // Alias bombs expand to nothing.
    const bomb = [
      'a: &a [x, x, x, x, x, x, x, x, x]',
      ...Array.from(
        { length: 9 },
        (_, i) =>
          `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(9)
            .fill(`*${String.fromCharCode(97 + i)}`)
            .join(', ')}]`,
      ),
      'incident: { id: x }',
    ].join('\n');
    expect(parse(bomb, 'incident.yaml').ok).toBe(false);
    // Many videos with duplicate ids: the list of problems is capped, with a count of the rest.
    const dup = parse(
      JSON.stringify({ incident: { id: 'i' }, videos: Array.from({ length: 500 }, () => ({ id: 'same', file: 'cam01.mp4' })) }),
      'incident.json',
    );
    expect(dup.ok).toBe(false);
    if (!dup.ok) {
      expect(dup.problems).toHaveLength(MAX_PROBLEMS + 1);
      expect(dup.problems[0]).toBe('videos[1].id: duplicate id "same", already used by videos[0]');
      expect(dup.problems.at(-1)).toBe(`… and ${499 - MAX_PROBLEMS} more problems`);
    }
  });
});
