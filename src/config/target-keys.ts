// The keys every target has, whatever its platform: `type`, `base_url`, `auth` and
// `request_timeout`. Each platform's module (src/targets/<platform>/config.ts) adds its own keys
// with `targetBlock`, and the registry (src/targets/registry.ts) picks the block by `type`.

import { z } from 'zod';
import {
  ALWAYS,
  baseUrl,
  describeInput,
  dispatch,
  duration,
  exactlyOne,
  headerName,
  httpUrl,
  isPlainObject,
  jsonObject,
  jsonObjectText,
  optional,
  required,
  secretLine,
  section,
  text,
  tokenField,
} from './fields.js';

// auth: how a target's API calls authenticate. Exactly one of these forms:
//   { bearer: TOKEN }              → Authorization: Bearer TOKEN
//   { bearer_file: PATH }          → same, token read from a file
//   { header: NAME, value: V }     → NAME: V (e.g. X-API-Key); or value_file: PATH
//   { login: { url, body | body_file, token_field }, send_as: … }
//       POST body (a mapping, or body_file: a file holding a JSON object) as JSON to url,
//       read the token at token_field (dotted path, default accessToken) of the JSON answer,
//       and send it as `Authorization: Bearer` unless send_as is { query: NAME } (URL query
//       parameter, e.g. Valt's access_token) or { header: NAME }. Fetched again after a 401.
// The resolved value keeps the form's own keys; a `*_file` key holds the file's content.
const bearerAuth = section({
  bearer: optional(secretLine),
  bearer_file: optional(secretLine),
}).superRefine((v, ctx) => exactlyOne(ctx, v, 'bearer', 'bearer_file'), ALWAYS);

const headerAuth = section({
  header: required(headerName),
  value: optional(secretLine),
  value_file: optional(secretLine),
}).superRefine((v, ctx) => exactlyOne(ctx, v, 'value', 'value_file'), ALWAYS);

const loginRequest = section({
  url: required((v) => {
    httpUrl(v);
    return (v as string).trim();
  }),
  body: optional(jsonObject),
  body_file: optional(jsonObjectText),
  token_field: required(tokenField, 'accessToken'),
}).superRefine((v, ctx) => exactlyOne(ctx, v, 'body', 'body_file'), ALWAYS);

const sendAs = section({
  query: optional(text),
  header: optional(headerName),
}).superRefine((v, ctx) => exactlyOne(ctx, v, 'query', 'header', 'give query: NAME or header: NAME'), ALWAYS);

const loginAuth = section({
  login: loginRequest,
  send_as: sendAs.optional(),
});

export type BearerAuth = z.output<typeof bearerAuth>;
export type HeaderAuth = z.output<typeof headerAuth>;
export type LoginAuth = z.output<typeof loginAuth>;
export type AuthConfig = BearerAuth | HeaderAuth | LoginAuth;

const AUTH_FORMS = '{ bearer }, { bearer_file }, { header, value }, { header, value_file } or { login: { url, body, token_field } }';

export const authSchema = dispatch<AuthConfig>((v) => {
  if (v === undefined) return { problem: `required: one of ${AUTH_FORMS}` };
  if (!isPlainObject(v)) return { problem: `expected one of ${AUTH_FORMS}, got ${describeInput(v)}` };
  const forms = new Set<string>();
  for (const key of Object.keys(v)) {
    if (key === 'bearer' || key === 'bearer_file') forms.add('bearer');
    if (key === 'header' || key === 'value' || key === 'value_file') forms.add('header');
    if (key === 'login' || key === 'send_as') forms.add('login');
  }
  if (forms.size > 1) return { problem: `use one form only, not ${[...forms].join(' and ')}: ${AUTH_FORMS}` };
  if (forms.has('bearer')) return { schema: bearerAuth };
  if (forms.has('header')) return { schema: headerAuth };
  if (forms.has('login')) return { schema: loginAuth };
  return { problem: `expected one of ${AUTH_FORMS}` };
});

/** A platform's block: `type: <platform>`, the keys every target has, and the platform's own `keys`. */
export function targetBlock<T extends string, S extends z.ZodRawShape>(type: T, keys: S) {
  return section({
    type: z.literal(type),
    // The platform's API root, http or https; a trailing slash is dropped.
    base_url: required(baseUrl),
    auth: authSchema,
    // Seconds an API call (not a part upload: those have upload.stall_timeout) may take. Default 30.
    request_timeout: required(duration({ positive: true }), 30),
    ...keys,
  });
}
