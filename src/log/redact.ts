/**
 * Secrets must never reach a log line, an error, the ledger or `status`: tokens, `access_token`
 * query parameters, presigned-URL signatures, passwords in URLs. Every message built from a URL
 * or a response body passes through here.
 *
 * The patterns (a `Bearer` prefix, a secret query parameter, a token field of a JSON body) need
 * no state. The secret values the daemon holds — configured credentials, tokens a login issued —
 * are kept in a {@link Secrets} registry that belongs to the daemon's logger: a platform's error
 * body may echo a header such as `x-api-key` in any shape, which no pattern knows.
 */

/** Query parameters that carry credentials (Valt's access_token, S3 signatures, API keys). */
const SECRET_QUERY =
  /^(x-amz-signature|x-amz-credential|x-amz-security-token|access_token|refresh_token|id_token|token|api_key|apikey|key|signature|sig|password|secret|client_secret)$/i;

/** The URL with its userinfo password and the values of secret query parameters replaced by `***`. */
export function redactUrl(url: string): string {
  // Rewritten textually, not through URL.toString(), so that nothing else about the URL changes.
  const withoutPassword = url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#:@]*):[^/?#@]*@/i, '$1:***@');
  return withoutPassword.replace(/([?&])([^=&#]+)=([^&#]*)/g, (whole, sep: string, name: string) =>
    SECRET_QUERY.test(decodeSafe(name)) ? `${sep}${name}=***` : whole,
  );
}

const SECRET_PATTERNS: Array<[RegExp, string]> = [
  [/(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s"'<]+/gi, '$1***'],
  [/([?&](?:access_token|token|api_key|apikey|signature|password)=)[^&\s"'<]+/gi, '$1***'],
  // RFC 6750 tokens are [A-Za-z0-9-._~+/]+=*, but a platform may issue anything: up to a quote or a space.
  [/(Bearer\s+)[^\s"'<>,;]+/g, '$1***'],
  [/("(?:access_?token|accessToken|token|password|api_?key|apiKey|secret)"\s*:\s*")[^"]*"/gi, '$1***"'],
  // user:password@ in any URL of a message (a proxy URL, a login URL).
  [/([a-z][a-z0-9+.-]*:\/\/[^/?#:@\s]*):[^/?#@\s]*@/gi, '$1:***@'],
];

/** Any free text (an error message, a platform's response body) with secrets masked by pattern. */
export function redactText(text: string): string {
  let out = text;
  for (const [pattern, replacement] of SECRET_PATTERNS) out = out.replace(pattern, replacement);
  return out;
}

/** Shorter values are too likely to be ordinary words or numbers to mask everywhere. */
const MIN_KNOWN_SECRET = 6;
/** Issued tokens remembered; a daemon that runs for months logs in thousands of times. */
const MAX_ISSUED_TOKENS = 64;

/** The secret values one daemon holds, masked wherever they appear, whatever surrounds them. */
export class Secrets {
  private readonly configured = new Set<string>();
  /** Newest last; older ones have expired. */
  private readonly issued: string[] = [];
  private known: RegExp | null = null;

  /** Masks `value` (and its URL-encoded form) from now on. */
  register(value: string, kind: 'configured' | 'issued' = 'configured'): void {
    if (value.length < MIN_KNOWN_SECRET || this.configured.has(value) || this.issued.includes(value)) return;
    if (kind === 'configured') this.configured.add(value);
    else if (this.issued.push(value) > MAX_ISSUED_TOKENS) this.issued.shift();
    const forms = new Set([...this.configured, ...this.issued].flatMap((v) => [v, encodeURIComponent(v)]));
    // Longest first, so a value that contains another is masked whole.
    const alternatives = [...forms].sort((a, b) => b.length - a.length).map((f) => f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
    this.known = new RegExp(alternatives.join('|'), 'g');
  }

  /** Free text with every known secret and every secret-looking pattern masked. */
  text(text: string): string {
    return redactText(this.maskKnown(text));
  }

  /** A URL with every known secret and every secret query parameter masked. */
  url(url: string): string {
    return redactUrl(this.maskKnown(url));
  }

  private maskKnown(text: string): string {
    return this.known ? text.replace(this.known, '***') : text;
  }
}

function decodeSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
