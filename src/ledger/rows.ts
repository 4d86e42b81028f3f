/**
 * Decoders of the ledger's rows: the JSON columns are validated as they are read, so a row that
 * is not what the code expects fails loudly at the read, not somewhere downstream.
 */
import { z } from 'zod';
import { incidentSchema, videoInfoSchema } from '../watch/manifest.js';
import type { FileRole } from '../targets/target.js';

export type Row = Record<string, unknown>;

function jsonColumn<S extends z.ZodType>(schema: S) {
  return (text: unknown): z.output<S> => schema.parse(JSON.parse(String(text)));
}

// What the manifest gave, checked against the manifest's own schemas as it is read back.
export const incidentInfo = jsonColumn(incidentSchema);
export const videoInfo = jsonColumn(videoInfoSchema);
export const session = jsonColumn(z.record(z.string(), z.unknown()));
export const result = jsonColumn(z.record(z.string(), z.string()));
export const strings = jsonColumn(z.array(z.string()));

/** A nullable JSON column: null stays null. */
export function orNull<T>(decode: (text: unknown) => T): (text: unknown) => T | null {
  return (text) => (text === null || text === undefined ? null : decode(text));
}

function unexpected(what: string, v: unknown): never {
  throw new TypeError(`ledger row: expected ${what}, found ${v === null ? 'null' : typeof v}`);
}

export const role = (v: unknown): FileRole => (v === 'video' || v === 'thumbnail' ? v : unexpected('a file role', v));
export const str = (v: unknown): string => (typeof v === 'string' ? v : unexpected('text', v));
export const num = (v: unknown): number => (typeof v === 'number' ? v : unexpected('a number', v));
export const strOrNull = orNull(str);
export const numOrNull = orNull(num);

/** Rows whose columns are all plain values, read as they are. */
export const plain = <T>(row: Row): T => row as T;

export const json = (v: unknown): string => JSON.stringify(v);
