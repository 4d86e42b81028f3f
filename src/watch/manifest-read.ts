/**
 * Reading a manifest: its text and file name in, the untyped value out (or what is wrong with the
 * text). Everything about the two formats lives here; what the value must look like does not.
 */
import { CST, Lexer, isNode, parseAllDocuments, visit } from 'yaml';

export const MANIFEST_NAMES = ['incident.json', 'incident.yaml', 'incident.yml'] as const;

/** Callers should stat the manifest and skip reading anything larger: parseManifest refuses it anyway. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** The schema needs 4 levels; the rest is headroom for vendor extras, not for hostile input. */
export const MAX_NESTING_DEPTH = 64;
/** One broken manifest must not flood the log: the first problems are enough to fix the export. */
export const MAX_PROBLEMS = 50;

/** The value is made only of null, booleans, numbers, strings, arrays and plain objects. */
export type ReadResult = { ok: true; value: unknown } | { ok: false; problems: string[] };

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
const YAML_CORE_TAGS = new Set(['str', 'int', 'float', 'bool', 'null', 'map', 'seq'].map((t) => `tag:yaml.org,2002:${t}`));

/** Problems name the line and column of a syntax error, or the whole file; the caller prefixes the file path. */
export function readManifest(text: string, fileName: string): ReadResult {
  if (typeof text !== 'string') return refused(`manifest text must be a string, received ${typeName(text)}`);
  const name = typeof fileName === 'string' ? fileName : '';
  const format = formatOf(name);
  if (format === null) {
    return refused(`unsupported manifest name ${quote(baseName(name))} (expected ${MANIFEST_NAMES.join(', ')})`);
  }
  // UTF-8 byte length is never smaller than the UTF-16 length, so the cheap check can short-circuit.
  if (text.length > MAX_MANIFEST_BYTES || Buffer.byteLength(text, 'utf8') > MAX_MANIFEST_BYTES) {
    return refused(`manifest is larger than ${MAX_MANIFEST_BYTES / (1024 * 1024)} MiB`);
  }
  // Windows tools like to write a BOM, which JSON.parse rejects.
  const source = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  return format === 'json' ? readJson(source) : readYaml(source);
}

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

function refused(problem: string): ReadResult {
  return { ok: false, problems: [problem] };
}

// ---------------------------------------------------------------------------------------------
// JSON

function readJson(text: string): ReadResult {
  // The scan runs first so that depth is bounded before anything recursive sees the text, and so
  // that syntax errors get a line and column (V8's messages only sometimes carry a position).
  const scan = scanJson(text, MAX_NESTING_DEPTH);
  if (scan.kind === 'error') return refused(`JSON syntax error at ${where(text, scan.offset)}: ${scan.message}`);
  if (scan.kind === 'too-deep') return refused(`nesting deeper than ${MAX_NESTING_DEPTH} levels at ${where(text, scan.offset)}`);
  try {
    // JSON.parse makes "__proto__" an own property like any other key, never the prototype.
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (err) {
    return refused(`JSON syntax error: ${describeError(err)}`);
  }
}

type JsonScan = { kind: 'ok' } | { kind: 'error'; offset: number; message: string } | { kind: 'too-deep'; offset: number };
type JsonScanState = 'value' | 'valueOrEnd' | 'key' | 'keyOrEnd' | 'colon' | 'commaOrEnd' | 'done';

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const HEX4 = /[0-9a-fA-F]{4}/y;

/** An iterative RFC 8259 syntax check that reports where the text first goes wrong. */
function scanJson(s: string, maxDepth: number): JsonScan {
  const stack: Array<'{' | '['> = [];
  const n = s.length;
  let state: JsonScanState = 'value';
  let i = 0;
  const error = (offset: number, message: string): JsonScan => ({ kind: 'error', offset, message });
  const afterValue = (): JsonScanState => (stack.length === 0 ? 'done' : 'commaOrEnd');
  const found = (at: number): string => describeChar(s, at);

  for (;;) {
    i = skipWhitespace(s, i);
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
    const end = scanLiteral(s, i);
    if (end === null) return error(i, `unexpected ${found(i)}`);
    i = end;
    state = afterValue();
  }
}

function skipWhitespace(s: string, from: number): number {
  let i = from;
  for (let w = s.charCodeAt(i); w === 0x20 || w === 0x09 || w === 0x0a || w === 0x0d; w = s.charCodeAt(i)) i++;
  return i;
}

/** Returns the offset just past a true, false, null or number, or null if there is none. */
function scanLiteral(s: string, start: number): number | null {
  const word = ['true', 'false', 'null'].find((w) => s.startsWith(w, start));
  if (word !== undefined) return start + word.length;
  NUMBER.lastIndex = start;
  const num = NUMBER.exec(s);
  return num === null ? null : start + num[0].length;
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

function readYaml(text: string): ReadResult {
  const tooBig = yamlPrescan(text);
  if (tooBig !== null) return refused(tooBig);
  // Core schema: no timestamps, binaries or sets sneaking in as non-JSON values; merge keys off.
  const docs = parseAllDocuments(text, {
    schema: 'core',
    prettyErrors: false,
    uniqueKeys: true,
    merge: false,
    strict: true,
    intAsBigInt: false,
  });
  if (docs.length === 0) return refused('manifest is empty');
  if (docs.length > 1) return refused(`YAML has ${docs.length} documents; a manifest must be exactly one`);
  const doc = docs[0]!;

  const problems = [...yamlSyntaxProblems(doc, text)];
  if (problems.length === 0) problems.push(...yamlTagProblems(doc, text));
  if (problems.length > 0) return { ok: false, problems: capped(problems) };

  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    return refused(`YAML: ${describeError(err)}`);
  }
  const shape = checkPlainTree(value);
  return shape === null ? { ok: true, value } : refused(shape);
}

type YamlDocument = ReturnType<typeof parseAllDocuments>[number];

function yamlSyntaxProblems(doc: YamlDocument, text: string): string[] {
  // The yaml library quotes the offending token whole in its messages: in a broken multi-MiB
  // manifest that is one multi-MiB log line (and ledger row). Shortened like any quoted value.
  const problems = doc.errors.map((e) => `YAML syntax error at ${where(text, e.pos[0])}: ${brief(e.message)}`);
  for (const w of doc.warnings) {
    if (w.code === 'TAG_RESOLVE_FAILED') problems.push(`YAML tag error at ${where(text, w.pos[0])}: ${brief(w.message)}`);
  }
  return problems;
}

function yamlTagProblems(doc: YamlDocument, text: string): string[] {
  const problems: string[] = [];
  visit(doc, (_key, node) => {
    if (!isNode(node) || node.tag === undefined || YAML_CORE_TAGS.has(node.tag)) return undefined;
    const at = node.range?.[0];
    problems.push(`unsupported YAML tag ${node.tag}${at === undefined ? '' : ` at ${where(text, at)}`}`);
    return undefined;
  });
  return problems;
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

/**
 * Block nesting, aliases and anything non-JSON are checked on the composed value, iteratively.
 * (The yaml library makes a "__proto__" key an own property, as JSON.parse does.)
 */
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
      for (const item of Object.values(value as Record<string, unknown>)) stack.push([item, depth + 1]);
      continue;
    }
    return `unsupported YAML value of type ${typeName(value)}`;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Messages, shared with the validation

/** The first problems and a count of the rest, which are never held: there can be millions. */
export function capped(problems: Iterable<string>): string[] {
  const shown: string[] = [];
  let more = 0;
  for (const problem of problems) {
    if (shown.length < MAX_PROBLEMS) shown.push(problem);
    else more++;
  }
  return more === 0 ? shown : [...shown, `… and ${more} more problems`];
}

export function typeName(v: unknown): string {
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

/** Quotes a value from the manifest for a message: escaped, and short enough for one log line. */
export function quote(value: string): string {
  const shown = value.length > 80 ? `${value.slice(0, 80)}…` : value;
  return JSON.stringify(shown);
}

export function describeError(err: unknown): string {
  return brief(err instanceof Error ? err.message : String(err));
}

/** A message from a library, on one line and at most 200 characters. */
function brief(message: string): string {
  const firstLine = message.split('\n', 1)[0] ?? '';
  return firstLine.length > 200 ? `${firstLine.slice(0, 200)}…` : firstLine;
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
