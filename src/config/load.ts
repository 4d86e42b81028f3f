// Reading the configuration file: YAML → `${NAME}` substitution → `*_file` secrets → schema.
// Every stage collects problems instead of stopping at the first, so an operator fixes a file
// in one round trip; each problem is named by its YAML path.

import fs from 'node:fs';
import path from 'node:path';
import { LineCounter, parseDocument, type Document } from 'yaml';
import { ConfigError, errnoText, type Env, type ReadFile } from './config-file.js';
import { formatProblem, type ConfigPath, type ConfigProblem } from './fields.js';
import { SECRET_FILE_KEYS, validateConfig, type Config } from './schema.js';

export interface LoadOptions {
  /** The environment `${NAME}` reads (the entry point passes process.env). Default: none. */
  env?: Env;
  readFile?: ReadFile;
  /** Relative paths in the file resolve against this; loadConfig uses the file's directory. */
  baseDir?: string;
  /** Names the source in ConfigError; default `configuration`. */
  source?: string;
}

export function loadConfig(file: string, env: Env, readFile: ReadFile = fs.readFileSync): Config {
  let text: string;
  try {
    text = readFile(file, 'utf8').toString();
  } catch (err) {
    throw new ConfigError(file, [`cannot read the configuration file (${errnoText(err)})`]);
  }
  return parseConfig(text, { env, readFile, baseDir: path.dirname(path.resolve(file)), source: file });
}

/** The configuration from YAML text (what loadConfig does after reading the file). */
export function parseConfig(text: string, options: LoadOptions = {}): Config {
  const source = options.source ?? 'configuration';
  const lineCounter = new LineCounter();
  // prettyErrors would quote the offending line, which may hold a secret.
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, merge: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      source,
      doc.errors.map((e) => {
        const { line, col } = lineCounter.linePos(e.pos[0]);
        const message = e.code === 'MULTIPLE_DOCS' ? 'the file holds more than one YAML document (---)' : e.message;
        return `line ${line}, column ${col}: ${message}`;
      }),
    );
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 1000 });
  } catch (err) {
    throw new ConfigError(source, [(err as Error).message]);
  }
  if (raw === null || raw === undefined) throw new ConfigError(source, ['the file is empty']);
  return resolve(raw, options, source, doc);
}

/**
 * The configuration from an object shaped like the YAML file (for tests and tools): `${NAME}`
 * and `*_file` are resolved exactly as for a file.
 */
export function resolveConfig(raw: unknown, options: LoadOptions = {}): Config {
  return resolve(raw, options, options.source ?? 'configuration', undefined);
}

function resolve(raw: unknown, options: LoadOptions, source: string, doc: Document | undefined): Config {
  const baseDir = options.baseDir ?? process.cwd();
  const pre = new Prepass(options.env ?? {}, options.readFile ?? fs.readFileSync, baseDir);
  const value = pre.walk(raw, []);
  const result = validateConfig(value, { baseDir, readFile: options.readFile });
  // A value already reported (unset variable, unreadable file) would only echo that problem.
  const schemaProblems = result.success ? [] : result.problems.filter((p) => !pre.problems.some((q) => isPrefix(q.path, p.path)));
  const problems = [...pre.problems, ...schemaProblems];
  if (problems.length === 0 && result.success) return result.config;
  const ordered = doc ? sortByPosition(problems, doc) : problems;
  throw new ConfigError(source, [...new Set(ordered.map(formatProblem))]);
}

// `$${` is a literal `${`; `${NAME}` or `${NAME:-fallback}` a reference; a lone `${` an error.
const REFERENCE_RE = /\$\$\{|\$\{([^{}]*)\}|\$\{/g;
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `${NAME}` substitution in every string scalar and reading of the `*_file` secrets. */
class Prepass {
  readonly problems: ConfigProblem[] = [];

  constructor(
    private readonly env: Env,
    private readonly readFile: ReadFile,
    private readonly baseDir: string,
  ) {}

  walk(value: unknown, at: ConfigPath): unknown {
    if (typeof value === 'string') return this.substitute(value, at);
    if (Array.isArray(value)) return value.map((item, i) => this.walk(item, [...at, i]));
    if (typeof value !== 'object' || value === null) return value;
    const out: Record<string, unknown> = {};
    for (const [key, child] of Object.entries(value)) {
      // `key:` with nothing after it means the same as leaving the key out.
      if (child === null || child === undefined) continue;
      const childPath = [...at, key];
      const before = this.problems.length;
      let resolved = this.walk(child, childPath);
      if (SECRET_FILE_KEYS.has(key) && typeof resolved === 'string' && this.problems.length === before) {
        resolved = this.readSecretFile(resolved, childPath);
      }
      out[key] = resolved;
    }
    return out;
  }

  private substitute(text: string, at: ConfigPath): string {
    return text.replace(REFERENCE_RE, (match, inner: string | undefined) => {
      if (match === '$${') return '${';
      if (inner === undefined) {
        this.problems.push({ path: at, message: 'unterminated ${ (write $${ for a literal ${)' });
        return match;
      }
      const sep = inner.indexOf(':-');
      const name = sep === -1 ? inner : inner.slice(0, sep);
      if (!ENV_NAME_RE.test(name)) {
        this.problems.push({ path: at, message: `invalid environment variable reference \${${name}}` });
        return match;
      }
      const value = this.env[name];
      if (sep !== -1) return value ? value : inner.slice(sep + 2);
      if (value === undefined) {
        this.problems.push({ path: at, message: `environment variable ${name} is not set` });
        return match;
      }
      return value;
    });
  }

  private readSecretFile(file: string, at: ConfigPath): string {
    const absolute = path.resolve(this.baseDir, file);
    let content: string;
    try {
      content = this.readFile(absolute, 'utf8').toString();
    } catch (err) {
      this.problems.push({ path: at, message: `cannot read ${absolute} (${errnoText(err)})` });
      return file;
    }
    // Files written with `echo` end in a newline that is no part of the secret.
    const trimmed = content.replace(/\s+$/, '');
    if (trimmed === '') this.problems.push({ path: at, message: `${absolute} is empty` });
    return trimmed;
  }
}

function isPrefix(prefix: ConfigPath, p: ConfigPath): boolean {
  return prefix.length <= p.length && prefix.every((seg, i) => seg === p[i]);
}

/** File order: a problem sorts at its key; a missing key at the end of the mapping it belongs in. */
function sortByPosition(problems: ConfigProblem[], doc: Document): ConfigProblem[] {
  const positionOf = (p: ConfigPath): number => {
    for (let n = p.length; n > 0; n--) {
      const node: unknown = doc.getIn(p.slice(0, n), true);
      const range = (node as { range?: [number, number, number] } | undefined)?.range;
      if (range) return n === p.length ? range[0] : range[1];
    }
    return -1;
  };
  return problems
    .map((problem, index) => ({ problem, index, pos: positionOf(problem.path) }))
    .sort((a, b) => a.pos - b.pos || a.index - b.index)
    .map((e) => e.problem);
}
