/**
 * Secrets must never reach a log line, an error, the ledger or `status`: tokens, `access_token`
 * query parameters and presigned-URL signatures. Every message built from a URL or a response
 * body passes through here.
 */
const SECRET_QUERY = /^(x-amz-signature|x-amz-credential|x-amz-security-token|access_token|token|api_key|apikey|key|signature|sig|password|secret)$/i;

/** The URL with the values of secret query parameters replaced by `***`. */
export function redactUrl(url: string): string {
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
  [/(Bearer\s+)[A-Za-z0-9\-._~+/]+=*/g, '$1***'],
  [/("(?:access_?token|accessToken|token|password|api_?key|apiKey|secret)"\s*:\s*")[^"]*"/gi, '$1***"'],
];

/** Any free text (an error message, a platform's response body) with secrets masked. */
export function redactText(text: string): string {
  let out = text;
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
