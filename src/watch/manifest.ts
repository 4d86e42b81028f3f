/**
 * The incident manifest: what the value read from incident.json / incident.yaml must look like, and
 * how each way it can fall short is worded for the export's author.
 */
import { z } from 'zod';
import { capped, describeError, quote, readManifest, typeName } from './manifest-read.js';

export { MANIFEST_NAMES, MAX_MANIFEST_BYTES, MAX_NESTING_DEPTH, MAX_PROBLEMS } from './manifest-read.js';

export const MAX_VIDEOS = 10_000;
export const MAX_ID_LENGTH = 200;

const CONTROL_CHARACTER = /\p{Cc}/u;

/** Ids end up in URLs, object keys and SQL keys, so they are held to more than "a string". */
const id = z
  .string()
  .refine((value) => value.trim() !== '', { when: noProblemYet, error: 'must not be empty' })
  .refine(fitsIdLength, { when: noProblemYet, error: `must be at most ${MAX_ID_LENGTH} characters` })
  .refine((value) => !CONTROL_CHARACTER.test(value), {
    when: noProblemYet,
    error: (issue) => `must not contain control characters (found ${firstControlCharacter(issue.input)})`,
  })
  // encodeURIComponent throws on a lone surrogate, and UTF-8 cannot carry one.
  .refine((value) => !/\p{Cs}/u.test(value), { when: noProblemYet, error: 'must not contain unpaired surrogates' })
  // As a URL path segment these would be normalised away: PUT /incidents/.. is PUT /.
  .refine((value) => value !== '.' && value !== '..', {
    when: noProblemYet,
    error: (issue) => `must not be ${quote(String(issue.input))}`,
  });

const timestamp = z.string().refine((value) => !Number.isNaN(Date.parse(value)), {
  error: (issue) => `Invalid timestamp ${quote(String(issue.input))}`,
});
// NaN (YAML's .nan) and Infinity (JSON's 1e999) are numbers, but no place on earth.
const coordinate = z.number({
  error: (issue) => (typeof issue.input === 'number' ? `Expected finite number, received ${String(issue.input)}` : undefined),
});

/**
 * What a failed export says went wrong. The items are checked before zod's element by element
 * check: 4 MiB hold two million wrong items, and zod would take seconds to make an issue of each,
 * then overflow the stack handing them up. One issue holds the list; each wrong item in it is
 * still a problem of its own (see problemLines).
 */
const exportErrors = z.preprocess((value, ctx) => {
  if (Array.isArray(value) && !value.every((item) => typeof item === 'string')) {
    ctx.addIssue({ code: 'custom', params: { notAllStrings: value } });
  }
  return value;
}, z.array(z.string()));

/** Also what the ledger checks an incident's stored fields against when it reads them back. */
export const incidentSchema = manifestObject({
  id,
  title: z.string().optional(),
  description: z.string().optional(),
  incident_at: timestamp.optional(),
  created_at: timestamp.optional(),
  updated_at: timestamp.optional(),
  latitude: coordinate.optional(),
  longitude: coordinate.optional(),
});

/** What a video says of itself besides its files and errors: the platforms' metadata. */
const videoFields = {
  camera_id: z.string().optional(),
  camera_name: z.string().optional(),
  camera_description: z.string().optional(),
  camera_latitude: coordinate.optional(),
  camera_longitude: coordinate.optional(),
  started_at: timestamp.optional(),
  ended_at: timestamp.optional(),
};

/** A video's metadata as the ledger stores it, checked when read back. */
export const videoInfoSchema = manifestObject({ id, ...videoFields });

const videoSchema = manifestObject({
  id,
  file: z.string().optional(),
  thumbnail: z.string().optional(),
  ...videoFields,
  errors: exportErrors.optional(),
}).superRefine(
  (video, ctx) => {
    if (video.file === undefined && !video.errors?.length) ctx.addIssue('needs either file or errors');
  },
  // A broken file or errors field is problem enough; a broken id says nothing about them.
  { when: (payload) => payload.issues.every((issue) => issue.path?.[0] === 'id') },
);

const videoList = z
  .array(videoSchema)
  .max(MAX_VIDEOS, {
    error: (issue) => `at most ${MAX_VIDEOS} videos per manifest, found ${(issue.input as unknown[]).length}`,
  })
  // Even with some videos broken, the rest are still checked against each other.
  .superRefine(uniqueVideoIds, { when: (payload) => Array.isArray(payload.value) });

const manifestSchema = manifestObject({
  incident: incidentSchema,
  // A list first: zod would apply the length limit to anything that has a `length`, even after
  // refusing it as no list.
  videos: z
    .array(z.unknown())
    .pipe(videoList)
    .default(() => []),
});

export type ManifestIncident = z.output<typeof incidentSchema>;
export type ManifestVideo = z.output<typeof videoSchema>;
export type ManifestVideoInfo = z.output<typeof videoInfoSchema>;
export type Manifest = z.output<typeof manifestSchema>;

export type ManifestResult = { ok: true; manifest: Manifest } | { ok: false; problems: string[] };

/**
 * Parses and validates an incident manifest. Never throws: every failure comes back as a list of
 * problems, each naming the field path (`videos[1].id: Required`) or the line/column of a syntax error.
 * The caller prefixes the file path.
 */
export function parseManifest(text: string, fileName: string): ManifestResult {
  try {
    const read = readManifest(text, fileName);
    if (!read.ok) return read;
    const parsed = manifestSchema.safeParse(read.value, { error: typeProblem });
    if (!parsed.success) return { ok: false, problems: problemsOf(parsed.error.issues) };
    return { ok: true, manifest: parsed.data };
  } catch (err) {
    // Reaching this is a bug, but a manifest must never take the daemon down.
    return { ok: false, problems: [`internal error while reading the manifest: ${describeError(err)}`] };
  }
}

/** An object in the manifest, seen only through its own properties and without its null fields. */
function manifestObject<Shape extends z.core.$ZodLooseShape>(shape: Shape) {
  return z.preprocess(presentFields, z.object(shape));
}

/**
 * Own properties only: an inherited `id` (prototype tricks) must not count as present. Vendors
 * write null for "unknown", so a null field counts as absent; but an id is never unknown, and a
 * null one is refused as the wrong type rather than reported missing.
 */
function presentFields(value: unknown): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return value;
  // No prototype to inherit from, and no __proto__ setter to turn a key into one.
  const fields = Object.create(null) as Record<string, unknown>;
  for (const [key, field] of Object.entries(value)) {
    if (field !== null || key === 'id') fields[key] = field;
  }
  return fields;
}

/** Duplicates count only between videos that are valid on their own; the first keeps the id. */
function uniqueVideoIds(videos: ManifestVideo[], ctx: z.core.$RefinementCtx<ManifestVideo[]>): void {
  const broken = new Set(ctx.issues.map((issue) => issue.path?.[0]));
  const firstIndexOfId = new Map<string, number>();
  videos.forEach((video, index) => {
    if (broken.has(index)) return;
    const first = firstIndexOfId.get(video.id);
    if (first === undefined) {
      firstIndexOfId.set(video.id, index);
      return;
    }
    const message = `duplicate id ${quote(video.id)}, already used by videos[${first}]`;
    ctx.addIssue({ code: 'custom', path: [index, 'id'], input: video.id, message });
  });
}

/** One problem per id is enough to fix it. */
function noProblemYet(payload: z.core.ParsePayload): boolean {
  return payload.issues.length === 0;
}

/** Counts code points, not UTF-16 units: what a person counting characters would expect. */
function fitsIdLength(value: string): boolean {
  let length = 0;
  for (const _ of value) if (++length > MAX_ID_LENGTH) return false;
  return true;
}

function firstControlCharacter(value: unknown): string {
  const found = CONTROL_CHARACTER.exec(String(value))?.[0] ?? '';
  return `U+${(found.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')}`;
}

/** The wording of every type mismatch the schemas above leave unworded. */
function typeProblem(issue: z.core.$ZodRawIssue): string | undefined {
  if (issue.code !== 'invalid_type') return undefined;
  return issue.input === undefined ? 'Required' : mismatch(issue.expected, issue.input);
}

function mismatch(expected: string, value: unknown): string {
  return `Expected ${expected}, received ${typeName(value)}`;
}

function problemsOf(issues: z.core.$ZodIssue[]): string[] {
  // zod finds duplicate ids after all videos; a reader fixing the manifest goes video by video.
  const inOrder = [...issues].sort((a, b) => videoIndex(a) - videoIndex(b));
  return capped(problemLines(inOrder));
}

function* problemLines(issues: z.core.$ZodIssue[]): Generator<string> {
  for (const issue of issues) {
    const path = fieldPath(issue.path);
    const list = issue.code === 'custom' ? (issue.params?.notAllStrings as unknown[] | undefined) : undefined;
    if (list === undefined) {
      yield `${path}: ${issue.message}`;
      continue;
    }
    for (let index = 0; index < list.length; index++) {
      if (typeof list[index] !== 'string') yield `${path}[${index}]: ${mismatch('string', list[index])}`;
    }
  }
}

function videoIndex(issue: z.core.$ZodIssue): number {
  const [field, index] = issue.path;
  return field === 'videos' && typeof index === 'number' ? index : -1;
}

/** `videos[1].errors[0]`, the way a person would point at the field; `(root)` for the whole manifest. */
function fieldPath(path: PropertyKey[]): string {
  if (path.length === 0) return '(root)';
  return path.map((key, i) => (typeof key === 'number' ? `[${key}]` : i === 0 ? String(key) : `.${String(key)}`)).join('');
}
