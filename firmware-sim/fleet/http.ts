/** The fleet runner's HTTP side: the documented API with a bearer key, nothing else. */
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { ErrorBody, NetworkSettings } from '../../schemas/types.js';

export const DEFAULT_NETWORK: NetworkSettings = {
  wifi: { ssid: 'provisiond-demo', security: 'wpa2-psk', secret: 'demo-passphrase-123' },
  ipv4: { mode: 'dhcp' },
  ntp: ['pool.ntp.org'],
};

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: ErrorBody | undefined,
  ) {
    super(`${status} ${body?.code ?? ''} ${body?.message ?? ''}`.trim());
  }
  get code(): string {
    return this.body?.code ?? `HTTP_${this.status}`;
  }
}

/**
 * Keep-alive agents shared by every API call of the process: a fleet run makes thousands of calls
 * (registration, claims) and would otherwise open a connection, or go through undici's fetch
 * machinery, for each.
 */
const agents = {
  'http:': new HttpAgent({ keepAlive: true, maxSockets: 64 }),
  'https:': new HttpsAgent({ keepAlive: true, maxSockets: 64 }),
};

/** One request; the status and the body as text. */
function send(url: URL, method: string, headers: Record<string, string>, payload: string | undefined): Promise<{ status: number; text: string }> {
  const request = url.protocol === 'https:' ? httpsRequest : url.protocol === 'http:' ? httpRequest : undefined;
  if (!request) return Promise.reject(new TypeError(`unsupported protocol ${url.protocol}`));
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers, agent: agents[url.protocol as keyof typeof agents] }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', (err) => reject(Object.assign(err, { reusedSocket: req.reusedSocket })));
    req.end(payload);
  });
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']);

export async function api<T>(base: string, key: string, method: string, path: string, body?: unknown): Promise<T> {
  const url = new URL(base + path);
  const verb = method.toUpperCase();
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers: Record<string, string> = { authorization: `Bearer ${key}` };
  if (payload !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(payload));
  }
  let res: { status: number; text: string };
  try {
    res = await send(url, verb, headers, payload);
  } catch (err) {
    // a kept-alive connection the server closed just as it was reused: sent once more, but only
    // when the method may be repeated (the server might have seen the first one)
    const e = err as NodeJS.ErrnoException & { reusedSocket?: boolean };
    if (!(e.reusedSocket && e.code === 'ECONNRESET' && IDEMPOTENT.has(verb))) throw err;
    res = await send(url, verb, headers, payload);
  }
  const ok = res.status >= 200 && res.status < 300;
  let parsed: unknown;
  try {
    parsed = res.text ? (JSON.parse(res.text) as unknown) : undefined;
  } catch {
    // not JSON (a proxy's error page): keep the status
    if (!ok) throw new ApiError(res.status, undefined);
    throw Object.assign(new Error(`${method} ${path}: answer is not JSON`), { code: 'NOT_JSON' });
  }
  if (!ok) throw new ApiError(res.status, parsed as ErrorBody | undefined);
  return parsed as T;
}

/** Nearest-rank percentile of an ascending array (exact; 0 when empty). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

/** A stable, short code for any error a device or an API call can end with. */
export function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && code) return code;
  // mqtt.js: a refused CONNECT carries the CONNACK return code as a number
  if (typeof code === 'number') return `CONNACK_${code}`;
  const message = err instanceof Error ? err.message : String(err);
  if (/connack timeout|connect timeout/i.test(message)) return 'CONNECT_TIMEOUT';
  if (/connection closed|client disconnecting/i.test(message)) return 'CONNECTION_CLOSED';
  return message.slice(0, 80) || 'UNKNOWN';
}
