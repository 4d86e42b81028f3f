/**
 * Decoders of the ledger's rows: the JSON columns are validated as they are read, so a row that
 * is not what the code expects fails loudly at the read, not somewhere downstream.
 */
import { z } from 'zod';
import type { FileRole, IncidentInfo, SessionState, UploadResult, VideoInfo } from '../targets/target.js';

export type Row = Record<string, unknown>;

function jsonColumn<S extends z.ZodType>(schema: S) {
  return (text: unknown): z.output<S> => schema.parse(JSON.parse(String(text)));
}

/** The incident and video fields as the manifest gave them (validated when the manifest was read). */
const manifestObject = z.looseObject({ id: z.string() });

export const incidentInfo = jsonColumn(manifestObject) as (text: unknown) => IncidentInfo;
export const videoInfo = jsonColumn(manifestObject) as (text: unknown) => VideoInfo;
export const session = jsonColumn(z.record(z.string(), z.unknown())) as (text: unknown) => SessionState;
export const result = jsonColumn(z.record(z.string(), z.string())) as (text: unknown) => UploadResult;
export const strings = jsonColumn(z.array(z.string()));

/** A nullable JSON column: null stays null. */
export function orNull<T>(decode: (text: unknown) => T): (text: unknown) => T | null {
  return (text) => (text === null || text === undefined ? null : decode(text));
}

export const role = (v: unknown): FileRole => z.enum(['video', 'thumbnail']).parse(v);
export const str = (v: unknown): string => String(v);
export const num = (v: unknown): number => Number(v);
export const strOrNull = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
export const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

/** Rows whose columns are all plain values, read as they are. */
export const plain = <T>(row: Row): T => row as T;

export const json = (v: unknown): string => JSON.stringify(v);
