/**
 * The service logger (pino, JSON lines on stdout), with what keeps secrets out of the logs:
 *
 * - no component logs a secret value: requests are logged as method, URL, host and peer only (no
 *   headers, no bodies), the broker logs client ids and codes (never a password or payload),
 *   errors by code and message;
 * - redact paths censor the fields that hold secrets wherever a log call passes them, up to two
 *   levels deep (`password`, `token`, `secret`, `claimCode`, `passphrase`, the Authorization and
 *   Cookie headers, ...);
 * - the error serializer drops properties drivers attach with the data of a failed command
 *   (ioredis' `command`, a `config`) and masks private keys, JWTs and API keys in messages and
 *   stacks (and those of the causes);
 * - the request serializer masks the value of query parameters whose name says secret.
 *
 * test/integration/no-secrets-in-logs.test.ts runs a real process at logLevel trace through a
 * full run and searches everything it wrote for every secret it handled.
 */
import pino, { type Logger, type LoggerOptions } from 'pino';

export const REDACTED = '[redacted]';

/** Field names that hold secrets; censored at the top level and one or two levels down. */
const SECRET_FIELDS = [
  'password',
  'passphrase',
  'keyPassphrase',
  'secret',
  'token',
  'claimCode',
  'adminApiKey',
  'apiKey',
  'privateKey',
  'keyPem',
  'pkcs12',
  'authorization',
  'cookie',
];

export const REDACT_PATHS: readonly string[] = [
  ...SECRET_FIELDS,
  ...SECRET_FIELDS.map((f) => `*.${f}`),
  ...SECRET_FIELDS.map((f) => `*.*.${f}`),
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-api-key"]',
  'res.headers["set-cookie"]',
];

/** Secret-looking text inside free text (error messages, stacks): private keys, JWTs, API keys, encrypted secret files. */
const SECRET_TEXT: readonly [RegExp, string][] = [
  [/-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----[\s\S]*?(-----END \1-----|$)/g, `-----BEGIN $1----- ${REDACTED}`],
  [/\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*/g, `${REDACTED} (JWT)`],
  [/\b(pdk_[0-9a-f]{16}_)[A-Za-z0-9_-]{20,}/g, `$1${REDACTED}`],
  [/provisiond-secret:v1:[A-Za-z0-9_:-]+/g, `provisiond-secret:v1:${REDACTED}`],
];

/** `text` with private keys, JWTs and API keys masked. */
export function scrubText(text: string): string {
  let out = text;
  for (const [re, replacement] of SECRET_TEXT) out = out.replace(re, replacement);
  return out;
}

/** Properties some libraries put on errors with the data of the failed operation. */
const DROPPED_ERROR_PROPERTIES = ['command', 'config', 'request', 'response', 'options', 'args', 'argv'];

function serializeError(err: unknown): unknown {
  if (!(err instanceof Error)) return typeof err === 'string' ? scrubText(err) : err;
  const out = pino.stdSerializers.err(err) as unknown as Record<string, unknown>;
  for (const key of DROPPED_ERROR_PROPERTIES) delete out[key];
  for (const key of ['message', 'stack']) if (typeof out[key] === 'string') out[key] = scrubText(out[key] as string);
  return out;
}

const SECRET_QUERY = /(^|[?&])((?:[^=&]*)(?:token|key|secret|password|passphrase|code)(?:[^=&]*))=([^&#]*)/gi;

/** A URL with the values of secret-named query parameters masked. */
export function scrubUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  return url.slice(0, q) + url.slice(q).replace(SECRET_QUERY, (_m, sep: string, name: string) => `${sep}${name}=${REDACTED}`);
}

interface LoggedRequest {
  method?: string;
  url?: string;
  host?: string;
  ip?: string;
  socket?: { remotePort?: number };
}

/** method, URL (secret query values masked), host, peer: never headers or the body. */
function serializeRequest(req: LoggedRequest): Record<string, unknown> {
  return {
    method: req.method,
    url: typeof req.url === 'string' ? scrubUrl(req.url) : req.url,
    host: req.host,
    remoteAddress: req.ip,
    remotePort: req.socket?.remotePort,
  };
}

export const logSerializers = { err: serializeError, error: serializeError, req: serializeRequest };

/** The options every provisiond logger is built with. */
export function loggerOptions(level: string): LoggerOptions {
  return { level, redact: { paths: [...REDACT_PATHS], censor: REDACTED }, serializers: logSerializers };
}

/** The service logger: pino with the redaction and serializers above, to stdout (or `destination`). */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return destination ? pino(loggerOptions(level), destination) : pino(loggerOptions(level));
}
