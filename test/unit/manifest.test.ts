import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import {
  MANIFEST_NAMES,
  MAX_MANIFEST_BYTES,
  MAX_PROBLEMS,
  MAX_VIDEOS,
  parseManifest,
  type Manifest,
  type ManifestResult,
} from '../../src/watch/manifest.js';

const CONTRACT_EXAMPLE = `{
  "incident": {
    "id": "8d1635ed-f747-427c-9b35-d83a08d08ab5",
    "title": "Hey There!",
    "description": "Something else description",
    "incident_at": "2023-02-02T11:04:12.987Z",
    "created_at": "2024-02-02T11:04:41.030Z",
    "updated_at": "2024-02-02T12:01:19.643Z",
    "latitude": 0,
    "longitude": 0
  },
  "videos": [
    {
      "id": "good-file-2",
      "file": "cam01a_1149.mov",
      "thumbnail": "cam01a_1149.jpg",
      "camera_id": "01000000-0001-babe-0007-48ea632b7f71",
      "camera_name": "192.168.0.241 - Camera - 01a",
      "camera_description": "",
      "camera_latitude": 0,
      "camera_longitude": 0,
      "started_at": "2024-02-02T11:49:22Z",
      "ended_at": "2024-02-02T11:51:32Z"
    },
    {
      "id": "bad-file-2",
      "camera_id": "01000000-0001-babe-0007-48ea632b7f71",
      "camera_name": "192.168.0.241 - Camera - 01",
      "started_at": "2024-02-02T11:49:22Z",
      "ended_at": "2024-02-02T11:51:32Z",
      "errors": ["G64 export failed with: No video available for the camera during the selected time period."]
    }
  ]
}`;

const EXPECTED: Manifest = {
  incident: {
    id: '8d1635ed-f747-427c-9b35-d83a08d08ab5',
    title: 'Hey There!',
    description: 'Something else description',
    incident_at: '2023-02-02T11:04:12.987Z',
    created_at: '2024-02-02T11:04:41.030Z',
    updated_at: '2024-02-02T12:01:19.643Z',
    latitude: 0,
    longitude: 0,
  },
  videos: [
    {
      id: 'good-file-2',
      file: 'cam01a_1149.mov',
      thumbnail: 'cam01a_1149.jpg',
      camera_id: '01000000-0001-babe-0007-48ea632b7f71',
      camera_name: '192.168.0.241 - Camera - 01a',
      camera_description: '',
      camera_latitude: 0,
      camera_longitude: 0,
      started_at: '2024-02-02T11:49:22Z',
      ended_at: '2024-02-02T11:51:32Z',
    },
    {
      id: 'bad-file-2',
      camera_id: '01000000-0001-babe-0007-48ea632b7f71',
      camera_name: '192.168.0.241 - Camera - 01',
      started_at: '2024-02-02T11:49:22Z',
      ended_at: '2024-02-02T11:51:32Z',
      errors: ['G64 export failed with: No video available for the camera during the selected time period.'],
    },
  ],
};

function ok(result: ManifestResult): Manifest {
  if (!result.ok) throw new Error(`expected ok, got problems:\n${result.problems.join('\n')}`);
  return result.manifest;
}

function problems(result: ManifestResult): string[] {
  if (result.ok) throw new Error(`expected problems, got ${JSON.stringify(result.manifest)}`);
  return result.problems;
}

/** A minimal valid manifest as an object, for tests to change one thing in. */
function base(): { incident: Record<string, unknown>; videos: Array<Record<string, unknown>> } {
  return { incident: { id: 'inc-1' }, videos: [{ id: 'v1', file: 'a.mov' }] };
}

const json = (value: unknown): ManifestResult => parseManifest(JSON.stringify(value), 'incident.json');

describe('parseManifest: the contract example', () => {
  it('parses the JSON example from CONTRACT.md', () => {
    expect(ok(parseManifest(CONTRACT_EXAMPLE, 'incident.json'))).toEqual(EXPECTED);
  });

  it('parses the same manifest written as YAML, under both YAML names', () => {
    const yaml = toYaml(JSON.parse(CONTRACT_EXAMPLE));
    expect(ok(parseManifest(yaml, 'incident.yaml'))).toEqual(EXPECTED);
    expect(ok(parseManifest(yaml, 'incident.yml'))).toEqual(EXPECTED);
  });

  it('keeps unquoted YAML timestamps as strings (core schema)', () => {
    const text = [
      'incident:',
      '  id: inc-1',
      '  incident_at: 2023-02-02T11:04:12.987Z',
      'videos:',
      '  - id: v1',
      '    file: a.mov',
      '    started_at: 2024-02-02 11:49:22',
      '',
    ].join('\n');
    const m = ok(parseManifest(text, 'incident.yaml'));
    expect(m.incident.incident_at).toBe('2023-02-02T11:04:12.987Z');
    expect(m.videos[0]?.started_at).toBe('2024-02-02 11:49:22');
  });

  it('exports the three manifest names', () => {
    expect(MANIFEST_NAMES).toEqual(['incident.json', 'incident.yaml', 'incident.yml']);
  });

  it('accepts a path or upper-case extension as the file name, and refuses other names', () => {
    expect(parseManifest(CONTRACT_EXAMPLE, '/srv/exports/a/incident.json').ok).toBe(true);
    expect(parseManifest(CONTRACT_EXAMPLE, 'INCIDENT.JSON').ok).toBe(true);
    expect(problems(parseManifest(CONTRACT_EXAMPLE, 'incident.txt'))[0]).toMatch(/unsupported manifest name "incident.txt"/);
  });

  it('ignores a leading byte-order mark', () => {
    expect(ok(parseManifest(`\uFEFF${CONTRACT_EXAMPLE}`, 'incident.json'))).toEqual(EXPECTED);
  });
});

describe('parseManifest: required fields and ids', () => {
  it('requires incident and incident.id', () => {
    expect(problems(json({ videos: [] }))).toEqual(['incident: Required']);
    expect(problems(json({ incident: {} }))).toEqual(['incident.id: Required']);
    expect(problems(json({ incident: 'x' }))).toEqual(['incident: Expected object, received string']);
    expect(problems(json([]))).toEqual(['(root): Expected object, received array']);
    expect(problems(parseManifest('null', 'incident.json'))).toEqual(['(root): Expected object, received null']);
  });

  it('requires every video id and names the index', () => {
    const m = base();
    m.videos.push({ file: 'b.mov' });
    expect(problems(json(m))).toEqual(['videos[1].id: Required']);
  });

  it('rejects ids of the wrong type', () => {
    const m = base();
    m.incident.id = 42;
    m.videos[0]!.id = ['x'];
    expect(problems(json(m))).toEqual(['incident.id: Expected string, received number', 'videos[0].id: Expected string, received array']);
  });

  it.each([
    ['', 'must not be empty'],
    ['   ', 'must not be empty'],
    ['a'.repeat(201), 'must be at most 200 characters'],
    ['a\u0000b', 'must not contain control characters (found U+0000)'],
    ['a\nb', 'must not contain control characters (found U+000A)'],
    ['a\u007fb', 'must not contain control characters (found U+007F)'],
    ['a\u0085b', 'must not contain control characters (found U+0085)'],
    ['a\ud800b', 'must not contain unpaired surrogates'],
    ['..', 'must not be ".."'],
    ['.', 'must not be "."'],
  ])('refuses the id %j', (id, message) => {
    const m = base();
    m.incident.id = id;
    m.videos[0]!.id = id;
    expect(problems(json(m))).toEqual([`incident.id: ${message}`, `videos[0].id: ${message}`]);
  });

  it('accepts ids up to 200 characters, counted as code points', () => {
    const m = base();
    m.incident.id = 'a'.repeat(200);
    m.videos[0]!.id = '🎥'.repeat(200); // 400 UTF-16 units
    const parsed = ok(json(m));
    expect(parsed.incident.id).toHaveLength(200);
    expect(parsed.videos[0]?.id).toBe('🎥'.repeat(200));
  });

  it('accepts unicode and URL-ish characters in ids', () => {
    const m = base();
    m.incident.id = 'Zürich/Ost #1 ?&%20';
    expect(ok(json(m)).incident.id).toBe('Zürich/Ost #1 ?&%20');
  });

  it('names both indexes of a duplicate video id', () => {
    const m = base();
    m.videos.push({ id: 'v2', file: 'b.mov' }, { id: 'v1', file: 'c.mov' });
    expect(problems(json(m))).toEqual(['videos[2].id: duplicate id "v1", already used by videos[0]']);
  });

  it('treats ids as case-sensitive', () => {
    const m = base();
    m.videos.push({ id: 'V1', file: 'b.mov' });
    expect(ok(json(m)).videos.map((v) => v.id)).toEqual(['v1', 'V1']);
  });
});

describe('parseManifest: optional fields', () => {
  it('treats a missing or null videos list as empty', () => {
    expect(ok(json({ incident: { id: 'x' } })).videos).toEqual([]);
    expect(ok(json({ incident: { id: 'x' }, videos: null })).videos).toEqual([]);
    expect(problems(json({ incident: { id: 'x' }, videos: {} }))).toEqual(['videos: Expected array, received object']);
    expect(problems(json({ incident: { id: 'x' }, videos: ['a.mov'] }))).toEqual(['videos[0]: Expected object, received string']);
  });

  it('ignores unknown keys and leaves them out of the result', () => {
    const m = base() as Record<string, unknown> & ReturnType<typeof base>;
    m.vendor = { deep: { stuff: [1, 2, 3] } };
    m.incident.severity = 'high';
    m.videos[0]!.codec = { name: 'h264' };
    expect(ok(json(m))).toEqual({ incident: { id: 'inc-1' }, videos: [{ id: 'v1', file: 'a.mov' }] });
  });

  it('treats null optional fields as absent', () => {
    const m = base();
    Object.assign(m.incident, { title: null, latitude: null, updated_at: null });
    Object.assign(m.videos[0]!, { thumbnail: null, camera_latitude: null, errors: null });
    expect(ok(json(m))).toEqual({ incident: { id: 'inc-1' }, videos: [{ id: 'v1', file: 'a.mov' }] });
  });

  it('reports known keys with the wrong type by field path', () => {
    const m = base();
    Object.assign(m.incident, { latitude: '12.5', title: 7, description: false });
    Object.assign(m.videos[0]!, { thumbnail: {}, camera_name: 1, camera_longitude: '1' });
    expect(problems(json(m))).toEqual([
      'incident.title: Expected string, received number',
      'incident.description: Expected string, received boolean',
      'incident.latitude: Expected number, received string',
      'videos[0].thumbnail: Expected string, received object',
      'videos[0].camera_name: Expected string, received number',
      'videos[0].camera_longitude: Expected number, received string',
    ]);
  });

  it('accepts any timestamp Date.parse understands and refuses the rest', () => {
    const m = base();
    Object.assign(m.incident, {
      incident_at: '2024-02-02',
      created_at: 'Fri, 02 Feb 2024 11:04:41 GMT',
      updated_at: '2024-02-02T11:04:41+01:00',
    });
    Object.assign(m.videos[0]!, { started_at: '2024-02-02 11:49:22', ended_at: 'February 2, 2024 11:51' });
    expect(ok(json(m)).incident.created_at).toBe('Fri, 02 Feb 2024 11:04:41 GMT');

    const bad = base();
    Object.assign(bad.incident, { incident_at: 'yesterday', created_at: '', updated_at: 1706871881 });
    expect(problems(json(bad))).toEqual([
      'incident.incident_at: Invalid timestamp "yesterday"',
      'incident.created_at: Invalid timestamp ""',
      'incident.updated_at: Expected string, received number',
    ]);
  });

  it('requires finite numbers', () => {
    const text = '{"incident":{"id":"a","latitude":1e999,"longitude":-1e999},"videos":[]}';
    expect(problems(parseManifest(text, 'incident.json'))).toEqual([
      'incident.latitude: Expected finite number, received Infinity',
      'incident.longitude: Expected finite number, received -Infinity',
    ]);
    const yaml = 'incident:\n  id: a\n  latitude: .nan\n  longitude: .inf\n';
    expect(problems(parseManifest(yaml, 'incident.yaml'))).toEqual([
      'incident.latitude: Expected finite number, received NaN',
      'incident.longitude: Expected finite number, received Infinity',
    ]);
  });

  it('checks errors is an array of strings', () => {
    const m = base();
    m.videos.push({ id: 'v2', errors: 'failed' }, { id: 'v3', errors: ['x', 3, null] });
    expect(problems(json(m))).toEqual([
      'videos[1].errors: Expected array, received string',
      'videos[2].errors[1]: Expected string, received number',
      'videos[2].errors[2]: Expected string, received null',
    ]);
  });

  it('needs either file or non-empty errors on every video', () => {
    const m = base();
    m.videos.push({ id: 'v2' }, { id: 'v3', errors: [] }, { id: 'v4', errors: ['export failed'] });
    expect(problems(json(m))).toEqual(['videos[1]: needs either file or errors', 'videos[2]: needs either file or errors']);
  });

  it('keeps a video that has both file and errors (a failed export) and an empty file name (refused later)', () => {
    const m = base();
    m.videos.push({ id: 'v2', file: 'b.mov', errors: ['partial'] }, { id: 'v3', file: '' });
    expect(ok(json(m)).videos).toEqual([
      { id: 'v1', file: 'a.mov' },
      { id: 'v2', file: 'b.mov', errors: ['partial'] },
      { id: 'v3', file: '' },
    ]);
  });
});

describe('parseManifest: limits', () => {
  it(`accepts ${MAX_VIDEOS} videos and refuses one more`, () => {
    const m = base();
    m.videos = Array.from({ length: MAX_VIDEOS }, (_, i) => ({ id: `v${i}`, file: `${i}.mov` }));
    expect(ok(json(m)).videos).toHaveLength(MAX_VIDEOS);
    m.videos.push({ id: 'one-more', file: 'x.mov' });
    expect(problems(json(m))).toEqual([`videos: at most ${MAX_VIDEOS} videos per manifest, found ${MAX_VIDEOS + 1}`]);
  });

  it('refuses a manifest text over 4 MiB, counting UTF-8 bytes', () => {
    const m = base();
    m.incident.description = 'x'.repeat(MAX_MANIFEST_BYTES);
    expect(problems(json(m))).toEqual(['manifest is larger than 4 MiB']);
    m.incident.description = 'ü'.repeat(MAX_MANIFEST_BYTES / 2); // fewer chars than the cap, more bytes
    expect(problems(json(m))).toEqual(['manifest is larger than 4 MiB']);
  });

  it('refuses deep JSON nesting without recursion, with the position', () => {
    const deep = `{"incident":{"id":"a","x":${'['.repeat(100_000)}`;
    expect(problems(parseManifest(deep, 'incident.json'))).toEqual(['nesting deeper than 64 levels at line 1, column 89']);
    const ok60 = `{"incident":{"id":"a","x":${'['.repeat(60)}${']'.repeat(60)}}}`;
    expect(parseManifest(ok60, 'incident.json').ok).toBe(true);
    const hostile = '['.repeat(MAX_MANIFEST_BYTES);
    expect(problems(parseManifest(hostile, 'incident.json'))[0]).toMatch(/^nesting deeper than 64 levels/);
  });

  it('refuses deep YAML nesting, flow and block, quickly', () => {
    const started = Date.now();
    const flow = `incident: {id: a, x: ${'['.repeat(MAX_MANIFEST_BYTES - 100)}`;
    expect(problems(parseManifest(flow, 'incident.yaml'))).toEqual(['nesting deeper than 64 levels at line 1, column 85']);
    let block = 'incident:\n  id: a\n  x:\n';
    for (let i = 2; i < 80; i++) block += `${' '.repeat(i * 2)}k:\n`;
    block += `${' '.repeat(160)}v\n`;
    expect(problems(parseManifest(block, 'incident.yaml'))).toEqual(['nesting deeper than 64 levels']);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('refuses YAML with too many values before composing it', () => {
    const text = `incident: {id: a}\nx: [${'1,'.repeat(500_001)}]\n`;
    expect(problems(parseManifest(text, 'incident.yaml'))[0]).toMatch(
      /^manifest has more than 500000 YAML values \(at line 2, column \d+\)$/,
    );
  });

  it('caps the number of problems reported', () => {
    const m = base();
    m.videos = Array.from({ length: 200 }, () => ({ file: 'a.mov' }));
    const list = problems(json(m));
    expect(list).toHaveLength(MAX_PROBLEMS + 1);
    expect(list[MAX_PROBLEMS]).toBe(`… and ${200 - MAX_PROBLEMS} more problems`);
  });
});

describe('parseManifest: syntax errors', () => {
  it('gives line and column for JSON errors', () => {
    const text = '{\n  "incident": {\n    "id": "a",\n  }\n}';
    expect(problems(parseManifest(text, 'incident.json'))).toEqual([
      `JSON syntax error at line 4, column 3: expected a double-quoted property name, found "}"`,
    ]);
    expect(problems(parseManifest('', 'incident.json'))).toEqual(['JSON syntax error at line 1, column 1: unexpected end of input']);
    expect(problems(parseManifest('{"incident": {"id": "a"}} x', 'incident.json'))).toEqual([
      'JSON syntax error at line 1, column 27: unexpected "x" after the end of the document',
    ]);
    expect(problems(parseManifest('{"a": "b\u0000"}', 'incident.json'))).toEqual([
      'JSON syntax error at line 1, column 9: control character "\\u0000" in a string',
    ]);
  });

  it('gives line and column for YAML errors', () => {
    const text = 'incident:\n  id: a\n  title: [unclosed\nvideos: []\n';
    const list = problems(parseManifest(text, 'incident.yaml'));
    expect(list.length).toBeGreaterThan(0);
    expect(list[0]).toMatch(/^YAML syntax error at line \d+, column \d+: /);
    expect(problems(parseManifest('incident:\n  id: a\n  id: b\n', 'incident.yaml'))[0]).toMatch(
      /^YAML syntax error at line 3, column 3: .*unique/i,
    );
  });

  it('refuses multi-document YAML', () => {
    const text = 'incident: {id: a}\n---\nincident: {id: b}\n';
    expect(problems(parseManifest(text, 'incident.yaml'))).toEqual(['YAML has 2 documents; a manifest must be exactly one']);
  });

  it('refuses an empty YAML manifest', () => {
    expect(problems(parseManifest('', 'incident.yml'))).toEqual(['manifest is empty']);
    expect(problems(parseManifest('# nothing\n', 'incident.yml'))).toEqual(['manifest is empty']);
    expect(problems(parseManifest('---\n', 'incident.yml'))).toEqual(['(root): Expected object, received null']);
  });

  it('refuses custom and non-core YAML tags', () => {
    for (const value of ['!!js/function "return 1"', '!foo bar', '!!binary aGk=', '!!timestamp 2024-01-01', '!!set {a}']) {
      const list = problems(parseManifest(`incident:\n  id: a\n  title: ${value}\n`, 'incident.yaml'));
      expect(list[0], value).toMatch(/^(YAML tag error|unsupported YAML tag) .*line 3, column \d+/);
    }
  });

  it('accepts core tags, and wants ids quoted when they look like numbers', () => {
    expect(ok(parseManifest('incident:\n  id: !!str 123\n', 'incident.yaml')).incident.id).toBe('123');
    expect(problems(parseManifest('incident:\n  id: 123\n', 'incident.yaml'))).toEqual(['incident.id: Expected string, received number']);
  });

  it('resolves YAML aliases but stops alias bombs', () => {
    const text = 'cam: &cam {camera_id: c1, camera_name: Front}\nincident: {id: a}\nvideos:\n  - {id: v1, file: a.mov}\n';
    expect(ok(parseManifest(text, 'incident.yaml')).videos).toHaveLength(1);
    const lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i < 12; i++)
      lines.push(
        `a${i}: &a${i} [${Array(10)
          .fill(`*a${i - 1}`)
          .join(', ')}]`,
      );
    lines.push('incident: {id: a}');
    const started = Date.now();
    expect(parseManifest(lines.join('\n'), 'incident.yaml').ok).toBe(false);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(parseManifest('incident: &i {id: a, self: *i}\n', 'incident.yaml').ok).toBe(false);
  });
});

describe('parseManifest: hostile input', () => {
  it('ignores prototype-pollution keys in JSON and YAML', () => {
    const texts: Array<[string, string]> = [
      ['{"__proto__": {"incident": {"id": "x"}}}', 'incident.json'],
      ['{"incident": {"__proto__": {"id": "x"}}}', 'incident.json'],
      ['{"incident": {"id": "a", "constructor": {"prototype": {"polluted": 1}}}, "__proto__": {"polluted": 1}}', 'incident.json'],
      ['__proto__:\n  incident: {id: x}\n', 'incident.yaml'],
      ['incident:\n  __proto__: {id: x}\n', 'incident.yaml'],
      ['incident: {id: a, constructor: {prototype: {polluted: 1}}}\n__proto__: {polluted: 1}\n', 'incident.yaml'],
    ];
    const results = texts.map(([text, name]) => parseManifest(text, name));
    expect(results.map((r) => r.ok)).toEqual([false, false, true, false, false, true]);
    expect(problems(results[0]!)).toEqual(['incident: Required']);
    expect(problems(results[1]!)).toEqual(['incident.id: Required']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted')).toBe(false);
  });

  it('never throws on non-string input', () => {
    for (const input of [undefined, null, 42, {}, Buffer.from('{}')]) {
      const result = parseManifest(input as string, 'incident.json');
      expect(result.ok).toBe(false);
    }
    expect(parseManifest(CONTRACT_EXAMPLE, undefined as unknown as string).ok).toBe(false);
  });

  it('never throws on 200 random byte strings, in either format', () => {
    for (let i = 0; i < 200; i++) {
      const bytes = randomBytes(1 + (i % 50) * 20);
      for (const text of [bytes.toString('latin1'), bytes.toString('utf8')]) {
        for (const name of ['incident.json', 'incident.yaml']) {
          const result = parseManifest(text, name);
          if (!result.ok) {
            expect(result.problems.length).toBeGreaterThan(0);
            for (const p of result.problems) expect(typeof p).toBe('string');
          }
        }
      }
    }
  });

  it('never throws on mutated valid manifests, and finds JSON syntax errors exactly when JSON.parse does', () => {
    const yamlExample = toYaml(JSON.parse(CONTRACT_EXAMPLE));
    const alphabet = '{}[]":,\\ \n\t-0e.1tfn\u0000é🎥ÿ#&*!|>';
    for (let i = 0; i < 200; i++) {
      for (const [source, name] of [
        [CONTRACT_EXAMPLE, 'incident.json'],
        [yamlExample, 'incident.yaml'],
      ] as const) {
        let text = source;
        const edits = 1 + (i % 5);
        for (let e = 0; e < edits; e++) {
          const at = randomBytes(4).readUInt32LE() % (text.length + 1);
          const roll = randomBytes(2);
          const ch = [...alphabet][roll[0]! % [...alphabet].length]!;
          if (roll[1]! % 3 === 0) text = text.slice(0, at) + text.slice(at + 1);
          else if (roll[1]! % 3 === 1) text = text.slice(0, at) + ch + text.slice(at);
          else text = text.slice(0, at) + ch + text.slice(at + 1);
        }
        const result = parseManifest(text, name);
        if (name === 'incident.json') {
          let parses = true;
          try {
            JSON.parse(text);
          } catch {
            parses = false;
          }
          const syntaxProblem = !result.ok && result.problems[0]!.startsWith('JSON syntax error');
          expect(syntaxProblem, text).toBe(!parses);
        }
        if (!result.ok)
          for (const p of result.problems)
            expect(p).toMatch(/^(\(root\)|incident|videos|JSON|YAML|nesting|unsupported|manifest|… and \d+ more problems$)/);
      }
    }
  });
});
