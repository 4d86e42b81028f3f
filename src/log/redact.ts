/**
 * Secrets must never reach a log line, an error, the ledger or `status`: tokens, `access_token`
 * query parameters and presigned-URL signatures. Every message built from a URL or a response
 * body passes through here.
 */
const SECRET_QUERY = /^(x-amz-signature|x-amz-credential|x-amz-security-token|access_token|token|api_key|apikey|key|signature|sig|password|secret)$/i;

/** The URL with the values of secret query parameters replaced by `***`. */
export function redactUrl(url: string): string {
  url = maskKnown(url);
  const q = url.indexOf('?');
  if (q < 0) return url;
  const query = url
    .slice(q + 1)
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      const name = eq < 0 ? pair : pair.slice(0, eq);
      return eq >= 0 && SECRET_QUERY.test(decodeSafe(name)) ? `${name}=***` : pair;
    })
    .join('&');
  return `${url.slice(0, q)}?${query}`;
}

const SECRET_PATTERNS: Array<[RegExp, string]> = [
  [/(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s"'<]+/gi, '$1***'],
  [/([?&](?:access_token|token|api_key|apikey|signature|password)=)[^&\s"'<]+/gi, '$1***'],
  // RFC 6750 tokens are [A-Za-z0-9-._~+/]+=*, but a platform may issue anything: up to a quote or a space.
  [/(Bearer\s+)[^\s"'<>,;]+/g, '$1***'],
  [/("(?:access_?token|accessToken|token|password|api_?key|apiKey|secret)"\s*:\s*")[^"]*"/gi, '$1***"'],
];

/**
 * Secret values the daemon holds (configured credentials, tokens a login issued), masked wherever
 * they appear, whatever surrounds them: the patterns above only know the usual framings (a
 * `Bearer` prefix, a query parameter, a JSON field), and a platform's error body may echo a
 * header such as `x-api-key` in any shape.
 */
const configuredSecrets = new Set<string>();
/** Issued tokens, newest last; a daemon that runs for months logs in thousands of times. */
const issuedTokens: string[] = [];
const MAX_ISSUED_TOKENS = 64;
let knownPattern: RegExp | null = null;
/** Shorter values are too likely to be ordinary words or numbers to mask everywhere. */
const MIN_KNOWN_SECRET = 6;

/**
 * Masks `value` (and its URL-encoded form) in everything redactText and redactUrl see from now on.
 * `issued`: a token a login handed out; only the latest few are remembered (older ones have expired).
 */
export function registerSecret(value: string, kind: 'configured' | 'issued' = 'configured'): void {
  if (value.length < MIN_KNOWN_SECRET || configuredSecrets.has(value) || issuedTokens.includes(value)) return;
  if (kind === 'configured') configuredSecrets.add(value);
  else if (issuedTokens.push(value) > MAX_ISSUED_TOKENS) issuedTokens.shift();
  const forms = new Set([...configuredSecrets, ...issuedTokens].flatMap((v) => [v, encodeURIComponent(v)]));
  // Longest first, so a value that contains another is masked whole.
  const alternatives = [...forms].sort((a, b) => b.length - a.length).map((f) => f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  knownPattern = new RegExp(alternatives.join('|'), 'g');
}

function maskKnown(text: string): string {
  return knownPattern ? text.replace(knownPattern, '***') : text;
}

/** Any free text (an error message, a platform's response body) with secrets masked. */
export function redactText(text: string): string {
  let out = maskKnown(text);
  for (const [pattern, replacement] of SECRET_PATTERNS) out = out.replace(pattern, replacement);
  return out;
}

function decodeSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
