import { CST, Lexer, isNode, parseAllDocuments, visit } from 'yaml';

export const MANIFEST_NAMES = ['incident.json', 'incident.yaml', 'incident.yml'] as const;

/** Callers should stat the manifest and skip reading anything larger: parseManifest refuses it anyway. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
export const MAX_VIDEOS = 10_000;
/** The schema needs 4 levels; the rest is headroom for vendor extras, not for hostile input. */
export const MAX_NESTING_DEPTH = 64;
export const MAX_ID_LENGTH = 200;
/** One broken manifest must not flood the log: the first problems are enough to fix the export. */
export const MAX_PROBLEMS = 50;

export interface ManifestIncident {
  id: string;
  title?: string;
  description?: string;
  incident_at?: string;
  created_at?: string;
  updated_at?: string;
  latitude?: number;
  longitude?: number;
}

export interface ManifestVideo {
  id: string;
  file?: string;
  thumbnail?: string;
  camera_id?: string;
  camera_name?: string;
  camera_description?: string;
  camera_latitude?: number;
  camera_longitude?: number;
  started_at?: string;
  ended_at?: string;
  errors?: string[];
}

export interface Manifest {
  incident: ManifestIncident;
  videos: ManifestVideo[];
}

export type ManifestResult = { ok: true; manifest: Manifest } | { ok: false; problems: string[] };

// Bounds the work on alias-heavy YAML (aliases share nodes, so a small text can expand a lot).
const MAX_VALUES = 2_000_000;
// About twice what 10,000 fully described videos need; keeps composing under a few seconds.
const MAX_YAML_NODES = 500_000;
// Tokens that become a node: plain scalars have no type of their own (null).
const YAML_NODE_TOKENS = new Set<string | null>([
  null,
  'single-quoted-scalar',
  'double-quoted-scalar',
  'block-scalar-header',
  'flow-seq-start',
  'flow-map-start',
  'alias',
]);
const YAML_CORE_TAGS = new Set(
  ['str', 'int', 'float', 'bool', 'null', 'map', 'seq'].map((t) => `tag:yaml.org,2002:${t}`),
);

type Obj = Record<string, unknown>;

/**
 * Parses and validates an incident manifest. Never throws: every failure comes back as a list of
 * problems, each naming the field path (`videos[1].id: Required`) or the line/column of a syntax error.
 * The caller prefixes the file path.
 */
export function parseManifest(text: string, fileName: string): ManifestResult {
  try {
    return parseUnsafe(text, fileName);
  } catch (err) {
    // Reaching this is a bug, but a manifest must never take the daemon down.
    return fail([`internal error while reading the manifest: ${describeError(err)}`]);
  }
}

function parseUnsafe(text: string, fileName: string): ManifestResult {
  if (typeof text !== 'string') return fail([`manifest text must be a string, received ${typeName(text)}`]);
  const name = typeof fileName === 'string' ? fileName : '';
  const format = formatOf(name);
  if (format === null) {
    return fail([`unsupported manifest name ${quote(baseName(name))} (expected ${MANIFEST_NAMES.join(', ')})`]);
  }
  // UTF-8 byte length is never smaller than the UTF-16 length, so the cheap check can short-circuit.
  if (text.length > MAX_MANIFEST_BYTES || Buffer.byteLength(text, 'utf8') > MAX_MANIFEST_BYTES) {
    return fail([`manifest is larger than ${MAX_MANIFEST_BYTES / (1024 * 1024)} MiB`]);
  }
  // Windows tools like to write a BOM, which JSON.parse rejects.
  const source = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  const parsed = format === 'json' ? parseJson(source) : parseYaml(source);
  if (!parsed.ok) return fail(parsed.problems);
  return validate(parsed.value);
}

type Parsed = { ok: true; value: unknown } | { ok: false; problems: string[] };

function formatOf(name: string): 'json' | 'yaml' | null {
  const lower = baseName(name).toLowerCase();
  if (lower.endsWith('.json')) return 'json';
  if (lower.endsWith('.yaml') || lower.endsWith('.yml')) return 'yaml';
  return null;
}

function baseName(name: string): string {
  const cut = Math.max(name.lastIndexOf('/'), name.lastIndexOf('\\'));
  return name.slice(cut + 1);
}

// ---------------------------------------------------------------------------------------------
// JSON

function parseJson(text: string): Parsed {
  // The scan runs first so that depth is bounded before anything recursive sees the text, and so
  // that syntax errors get a line and column (V8's messages only sometimes carry a position).
  const scan = scanJson(text, MAX_NESTING_DEPTH);
  if (scan.kind === 'error') {
    return { ok: false, problems: [`JSON syntax error at ${where(text, scan.offset)}: ${scan.message}`] };
  }
  if (scan.kind === 'too-deep') {
    return { ok: false, problems: [`nesting deeper than ${MAX_NESTING_DEPTH} levels at ${where(text, scan.offset)}`] };
  }
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (err) {
    return { ok: false, problems: [`JSON syntax error: ${describeError(err)}`] };
  }
}

type JsonScan = { kind: 'ok' } | { kind: 'error'; offset: number; message: string } | { kind: 'too-deep'; offset: number };

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const HEX4 = /[0-9a-fA-F]{4}/y;

/** An iterative RFC 8259 syntax check that reports where the text first goes wrong. */
function scanJson(s: string, maxDepth: number): JsonScan {
  type State = 'value' | 'valueOrEnd' | 'key' | 'keyOrEnd' | 'colon' | 'commaOrEnd' | 'done';
  const stack: Array<'{' | '['> = [];
  const n = s.length;
  let state: State = 'value';
  let i = 0;
  const error = (offset: number, message: string): JsonScan => ({ kind: 'error', offset, message });
  const afterValue = (): State => (stack.length === 0 ? 'done' : 'commaOrEnd');
  const found = (at: number): string => describeChar(s, at);

  for (;;) {
    while (i < n) {
      const w = s.charCodeAt(i);
      if (w === 0x20 || w === 0x09 || w === 0x0a || w === 0x0d) i++;
      else break;
    }
    if (i >= n) return state === 'done' ? { kind: 'ok' } : error(n, 'unexpected end of input');
    const c = s.charCodeAt(i);

    if (state === 'done') return error(i, `unexpected ${found(i)} after the end of the document`);
    if (state === 'colon') {
      if (c !== 0x3a) return error(i, `expected ':' after the property name, found ${found(i)}`);
      i++;
      state = 'value';
      continue;
    }
    if (state === 'commaOrEnd') {
      const top = stack[stack.length - 1];
      const close = top === '{' ? 0x7d : 0x5d;
      if (c === 0x2c) {
        i++;
        state = top === '{' ? 'key' : 'value';
        continue;
      }
      if (c === close) {
        i++;
        stack.pop();
        state = afterValue();
        continue;
      }
      return error(i, `expected ',' or '${top === '{' ? '}' : ']'}', found ${found(i)}`);
    }
    if (state === 'keyOrEnd' || state === 'key') {
      if (state === 'keyOrEnd' && c === 0x7d) {
        i++;
        stack.pop();
        state = afterValue();
        continue;
      }
      if (c !== 0x22) return error(i, `expected a double-quoted property name, found ${found(i)}`);
      const end = scanString(s, i);
      if (typeof end !== 'number') return end;
      i = end;
      state = 'colon';
      continue;
    }
    // state is 'value' or 'valueOrEnd'
    if (state === 'valueOrEnd' && c === 0x5d) {
      i++;
      stack.pop();
      state = afterValue();
      continue;
    }
    if (c === 0x7b || c === 0x5b) {
      stack.push(c === 0x7b ? '{' : '[');
      if (stack.length > maxDepth) return { kind: 'too-deep', offset: i };
      i++;
      state = c === 0x7b ? 'keyOrEnd' : 'valueOrEnd';
      continue;
    }
    if (c === 0x22) {
      const end = scanString(s, i);
      if (typeof end !== 'number') return end;
      i = end;
      state = afterValue();
      continue;
    }
    const literal = ['true', 'false', 'null'].find((word) => s.startsWith(word, i));
    if (literal !== undefined) {
      i += literal.length;
      state = afterValue();
      continue;
    }
    NUMBER.lastIndex = i;
    const num = NUMBER.exec(s);
    if (num !== null) {
      i += num[0].length;
      state = afterValue();
      continue;
    }
    return error(i, `unexpected ${found(i)}`);
  }
}

/** Returns the offset just past the closing quote, or the error. */
function scanString(s: string, start: number): number | JsonScan {
  const n = s.length;
  let j = start + 1;
  for (;;) {
    if (j >= n) return { kind: 'error', offset: n, message: 'unterminated string' };
    const c = s.charCodeAt(j);
    if (c === 0x22) return j + 1;
    if (c < 0x20) return { kind: 'error', offset: j, message: `control character ${describeChar(s, j)} in a string` };
    if (c === 0x5c) {
      const e = s.charAt(j + 1);
      if (e === 'u') {
        HEX4.lastIndex = j + 2;
        if (!HEX4.test(s)) return { kind: 'error', offset: j, message: 'invalid \\u escape in a string' };
        j += 6;
      } else if (e !== '' && '"\\/bfnrt'.includes(e)) {
        j += 2;
      } else {
        return { kind: 'error', offset: j, message: 'invalid escape in a string' };
      }
      continue;
    }
    j++;
  }
}

// ---------------------------------------------------------------------------------------------
// YAML

function parseYaml(text: string): Parsed {
  const refused = yamlPrescan(text);
  if (refused !== null) return { ok: false, problems: [refused] };
  // Core schema: no timestamps, binaries or sets sneaking in as non-JSON values; merge keys off.
  const docs = parseAllDocuments(text, {
    schema: 'core',
    prettyErrors: false,
    uniqueKeys: true,
    merge: false,
    strict: true,
    intAsBigInt: false,
  });
  if (docs.length === 0) return { ok: false, problems: ['manifest is empty'] };
  if (docs.length > 1) {
    return { ok: false, problems: [`YAML has ${docs.length} documents; a manifest must be exactly one`] };
  }
  const doc = docs[0]!;
  const problems: string[] = [];
  // The yaml library quotes the offending token whole in its messages: in a broken multi-MiB
  // manifest that is one multi-MiB log line (and ledger row). Shortened like any quoted value.
  for (const e of doc.errors) problems.push(`YAML syntax error at ${where(text, e.pos[0])}: ${brief(e.message)}`);
  for (const w of doc.warnings) {
    if (w.code === 'TAG_RESOLVE_FAILED') problems.push(`YAML tag error at ${where(text, w.pos[0])}: ${brief(w.message)}`);
  }
  if (problems.length > 0) return { ok: false, problems: capped(problems) };

  visit(doc, (_key, node) => {
    if (!isNode(node) || node.tag === undefined || YAML_CORE_TAGS.has(node.tag)) return undefined;
    const at = node.range?.[0];
    problems.push(`unsupported YAML tag ${node.tag}${at === undefined ? '' : ` at ${where(text, at)}`}`);
    return undefined;
  });
  if (problems.length > 0) return { ok: false, problems: capped(problems) };

  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    return { ok: false, problems: [`YAML: ${describeError(err)}`] };
  }
  const shape = checkPlainTree(value);
  if (shape !== null) return { ok: false, problems: [shape] };
  return { ok: true, value };
}

/**
 * The YAML composer is slow on hostile shapes (deep flow nesting or a million tiny values in a few
 * MiB take tens of seconds, blocking the daemon), so depth and node count are checked on the
 * lexer's tokens first; the lexer tells a `[` that opens a collection from one inside a scalar.
 */
function yamlPrescan(text: string): string | null {
  let depth = 0;
  let nodes = 0;
  let offset = 0;
  for (const token of new Lexer().lex(text)) {
    // Lexer control tokens are markers, not source text.
    if (token === CST.DOCUMENT || token === CST.FLOW_END || token === CST.SCALAR) continue;
    const type = CST.tokenType(token);
    if (type === 'flow-seq-start' || type === 'flow-map-start') {
      depth++;
      if (depth > MAX_NESTING_DEPTH) return `nesting deeper than ${MAX_NESTING_DEPTH} levels at ${where(text, offset)}`;
    } else if (type === 'flow-seq-end' || type === 'flow-map-end') {
      depth--;
    }
    if (YAML_NODE_TOKENS.has(type) && ++nodes > MAX_YAML_NODES) {
      return `manifest has more than ${MAX_YAML_NODES} YAML values (at ${where(text, offset)})`;
    }
    offset += token.length;
  }
  return null;
}

/** Block nesting, aliases and anything non-JSON are checked on the composed value, iteratively. */
function checkPlainTree(root: unknown): string | null {
  const stack: Array<[unknown, number]> = [[root, 0]];
  let seen = 0;
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [value, depth] = top;
    if (++seen > MAX_VALUES) return `manifest has more than ${MAX_VALUES} values`;
    if (value === null || typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') {
      continue;
    }
    if (depth >= MAX_NESTING_DEPTH) return `nesting deeper than ${MAX_NESTING_DEPTH} levels`;
    if (Array.isArray(value)) {
      for (const item of value) stack.push([item, depth + 1]);
      continue;
    }
    const proto: unknown = typeof value === 'object' ? Object.getPrototypeOf(value) : undefined;
    if (proto === Object.prototype || proto === null) {
      for (const item of Object.values(value as Obj)) stack.push([item, depth + 1]);
      continue;
    }
    return `unsupported YAML value of type ${typeName(value)}`;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Validation

class Problems {
  readonly list: string[] = [];
  private dropped = 0;
  add(path: string, message: string): void {
    if (this.list.length < MAX_PROBLEMS) this.list.push(`${path}: ${message}`);
    else this.dropped++;
  }
  result(): string[] {
    return this.dropped === 0 ? this.list : [...this.list, `… and ${this.dropped} more problems`];
  }
}

function validate(root: unknown): ManifestResult {
  const problems = new Problems();
  if (!isObject(root)) {
    problems.add('(root)', expected('object', root));
    return fail(problems.result());
  }

  const rawIncident = own(root, 'incident');
  let incident: ManifestIncident | null = null;
  if (rawIncident === undefined || rawIncident === null) problems.add('incident', 'Required');
  else if (!isObject(rawIncident)) problems.add('incident', expected('object', rawIncident));
  else incident = validateIncident(rawIncident, problems);

  const videos: ManifestVideo[] = [];
  const rawVideos = own(root, 'videos');
  if (rawVideos !== undefined && rawVideos !== null) {
    if (!Array.isArray(rawVideos)) {
      problems.add('videos', expected('array', rawVideos));
    } else if (rawVideos.length > MAX_VIDEOS) {
      problems.add('videos', `at most ${MAX_VIDEOS} videos per manifest, found ${rawVideos.length}`);
    } else {
      const firstIndexOfId = new Map<string, number>();
      rawVideos.forEach((raw: unknown, index) => {
        const path = `videos[${index}]`;
        if (!isObject(raw)) {
          problems.add(path, expected('object', raw));
          return;
        }
        const video = validateVideo(raw, path, problems);
        if (video === null) return;
        const first = firstIndexOfId.get(video.id);
        if (first !== undefined) {
          problems.add(`${path}.id`, `duplicate id ${quote(video.id)}, already used by videos[${first}]`);
          return;
        }
        firstIndexOfId.set(video.id, index);
        videos.push(video);
      });
    }
  }

  if (problems.list.length > 0 || incident === null) return fail(problems.result());
  return { ok: true, manifest: { incident, videos } };
}

function validateIncident(raw: Obj, problems: Problems): ManifestIncident | null {
  const id = readId(raw, 'incident', problems);
  const incident: Partial<ManifestIncident> = {};
  if (id !== undefined) incident.id = id;
  const f = new FieldReader(raw, 'incident', problems);
  f.string('title', (v) => (incident.title = v));
  f.string('description', (v) => (incident.description = v));
  f.timestamp('incident_at', (v) => (incident.incident_at = v));
  f.timestamp('created_at', (v) => (incident.created_at = v));
  f.timestamp('updated_at', (v) => (incident.updated_at = v));
  f.number('latitude', (v) => (incident.latitude = v));
  f.number('longitude', (v) => (incident.longitude = v));
  return id === undefined || f.failed ? null : (incident as ManifestIncident);
}

function validateVideo(raw: Obj, path: string, problems: Problems): ManifestVideo | null {
  const id = readId(raw, path, problems);
  const video: Partial<ManifestVideo> = {};
  if (id !== undefined) video.id = id;
  const f = new FieldReader(raw, path, problems);
  f.string('file', (v) => (video.file = v));
  f.string('thumbnail', (v) => (video.thumbnail = v));
  f.string('camera_id', (v) => (video.camera_id = v));
  f.string('camera_name', (v) => (video.camera_name = v));
  f.string('camera_description', (v) => (video.camera_description = v));
  f.number('camera_latitude', (v) => (video.camera_latitude = v));
  f.number('camera_longitude', (v) => (video.camera_longitude = v));
  f.timestamp('started_at', (v) => (video.started_at = v));
  f.timestamp('ended_at', (v) => (video.ended_at = v));
  f.stringArray('errors', (v) => (video.errors = v));
  if (!f.failed && video.file === undefined && (video.errors === undefined || video.errors.length === 0)) {
    problems.add(path, 'needs either file or errors');
    return null;
  }
  return id === undefined || f.failed ? null : (video as ManifestVideo);
}

/** Ids end up in URLs, object keys and SQL keys, so they are held to more than "a string". */
function readId(raw: Obj, parent: string, problems: Problems): string | undefined {
  const path = `${parent}.id`;
  const value = own(raw, 'id');
  if (value === undefined) {
    problems.add(path, 'Required');
    return undefined;
  }
  if (typeof value !== 'string') {
    problems.add(path, expected('string', value));
    return undefined;
  }
  const problem = idProblem(value);
  if (problem !== null) {
    problems.add(path, problem);
    return undefined;
  }
  return value;
}

function idProblem(id: string): string | null {
  if (id.trim() === '') return 'must not be empty';
  // Code points, not UTF-16 units: what a person counting characters would expect.
  let length = 0;
  for (const _ of id) if (++length > MAX_ID_LENGTH) return `must be at most ${MAX_ID_LENGTH} characters`;
  const control = /\p{Cc}/u.exec(id);
  if (control !== null) return `must not contain control characters (found ${codePoint(control[0])})`;
  // encodeURIComponent throws on a lone surrogate, and UTF-8 cannot carry one.
  if (/\p{Cs}/u.test(id)) return 'must not contain unpaired surrogates';
  // As a URL path segment these would be normalised away: PUT /incidents/.. is PUT /.
  if (id === '.' || id === '..') return `must not be ${quote(id)}`;
  return null;
}

/** Reads optional fields; null counts as absent, since vendors emit it for "unknown". */
class FieldReader {
  failed = false;
  constructor(
    private readonly raw: Obj,
    private readonly parent: string,
    private readonly problems: Problems,
  ) {}

  private get(key: string): unknown {
    const value = own(this.raw, key);
    return value === null ? undefined : value;
  }

  private problem(key: string, message: string): void {
    this.failed = true;
    this.problems.add(`${this.parent}.${key}`, message);
  }

  string(key: string, set: (v: string) => void): void {
    const v = this.get(key);
    if (v === undefined) return;
    if (typeof v !== 'string') this.problem(key, expected('string', v));
    else set(v);
  }

  timestamp(key: string, set: (v: string) => void): void {
    const v = this.get(key);
    if (v === undefined) return;
    if (typeof v !== 'string') this.problem(key, expected('string', v));
    else if (Number.isNaN(Date.parse(v))) this.problem(key, `Invalid timestamp ${quote(v)}`);
    else set(v);
  }

  number(key: string, set: (v: number) => void): void {
    const v = this.get(key);
    if (v === undefined) return;
    if (typeof v !== 'number') this.problem(key, expected('number', v));
    else if (!Number.isFinite(v)) this.problem(key, `Expected finite number, received ${String(v)}`);
    else set(v);
  }

  stringArray(key: string, set: (v: string[]) => void): void {
    const v = this.get(key);
    if (v === undefined) return;
    if (!Array.isArray(v)) {
      this.problem(key, expected('array', v));
      return;
    }
    const out: string[] = [];
    v.forEach((item: unknown, index) => {
      if (typeof item === 'string') out.push(item);
      else this.problem(`${key}[${index}]`, expected('string', item));
    });
    if (out.length === v.length) set(out);
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function capped(problems: string[]): string[] {
  if (problems.length <= MAX_PROBLEMS) return problems;
  return [...problems.slice(0, MAX_PROBLEMS), `… and ${problems.length - MAX_PROBLEMS} more problems`];
}

function fail(problems: string[]): ManifestResult {
  return { ok: false, problems };
}

function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Own properties only: an inherited `id` (prototype tricks) must not count as present. */
function own(o: Obj, key: string): unknown {
  return Object.prototype.hasOwnProperty.call(o, key) ? o[key] : undefined;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number' && Number.isNaN(v)) return 'nan';
  if (typeof v === 'object') {
    const ctor: unknown = (Object.getPrototypeOf(v) as { constructor?: unknown } | null)?.constructor;
    const name = typeof ctor === 'function' ? ctor.name : '';
    return name === '' || name === 'Object' ? 'object' : name;
  }
  return typeof v;
}

function expected(type: string, value: unknown): string {
  return `Expected ${type}, received ${typeName(value)}`;
}

/** Quotes a value from the manifest for a message: escaped, and short enough for one log line. */
function quote(value: string): string {
  const shown = value.length > 80 ? `${value.slice(0, 80)}…` : value;
  return JSON.stringify(shown);
}

function codePoint(ch: string): string {
  return `U+${(ch.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')}`;
}

function describeChar(s: string, at: number): string {
  const cp = s.codePointAt(at);
  if (cp === undefined) return 'end of input';
  return JSON.stringify(String.fromCodePoint(cp));
}

/** 1-based line and column (in UTF-16 units, as editors that report columns mostly do). */
function where(text: string, offset: number): string {
  const at = Math.max(0, Math.min(offset, text.length));
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < at; i = text.indexOf('\n', i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return `line ${line}, column ${at - lineStart + 1}`;
}

function describeError(err: unknown): string {
  return brief(err instanceof Error ? err.message : String(err));
}

/** A message from a library, on one line and at most 200 characters. */
function brief(message: string): string {
  const firstLine = message.split('\n', 1)[0] ?? '';
  return firstLine.length > 200 ? `${firstLine.slice(0, 200)}…` : firstLine;
}
