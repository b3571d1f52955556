/** The fleet runner's HTTP side: the documented API with a bearer key, nothing else. */
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

export async function api<T>(base: string, key: string, method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text ? (JSON.parse(text) as unknown) : undefined;
  } catch {
    // not JSON (a proxy's error page): keep the status
    if (!res.ok) throw new ApiError(res.status, undefined);
    throw Object.assign(new Error(`${method} ${path}: answer is not JSON`), { code: 'NOT_JSON' });
  }
  if (!res.ok) throw new ApiError(res.status, parsed as ErrorBody | undefined);
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
