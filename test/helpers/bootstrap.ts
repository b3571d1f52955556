/**
 * One bootstrap CSR exchange over MQTT/TLS as docs/protocol.md §6-§7 describe it, reporting what
 * happened instead of throwing, so that tests can apply the documented retry rules (§15) and
 * count outcomes: connect with the bootstrap credential, subscribe to csr/accepted and
 * csr/rejected, publish the CSR, wait for the answer carrying our requestId.
 */
import { request } from 'node:https';
import mqtt from 'mqtt';
import type { ClaimResponse, MqttCsrAccepted, MqttError } from '../../schemas/types.js';

export type Bootstrap = NonNullable<ClaimResponse['bootstrap']>;

export type CsrTry =
  /** csr/accepted for our requestId */
  | { kind: 'accepted'; answer: MqttCsrAccepted }
  /** csr/rejected for our requestId */
  | { kind: 'rejected'; code: string; message: string }
  /** CONNECT refused with this CONNACK return code (3: server unavailable, 4: bad credential, ...) */
  | { kind: 'refused'; connack: number }
  /** No answer: TLS/TCP failure, connection closed (e.g. taken over by another connection with the same client id), or timeout */
  | { kind: 'lost'; reason: string };

export async function bootstrapCsrOnce(
  mqttUrl: string,
  bootstrap: Bootstrap,
  csrPem: string,
  opts: {
    requestId: string;
    timeoutMs?: number;
    /** Publish right behind the SUBSCRIBE instead of after the SUBACK (the answer may then be lost, §4). */
    pipeline?: boolean;
    /** Sees every answer this connection receives, also those to other sends of the device. */
    observe?: (topic: string, body: Record<string, unknown>) => void;
  },
): Promise<CsrTry> {
  const id = bootstrap.clientId;
  const accepted = `devices/${id}/csr/accepted`;
  const rejected = `devices/${id}/csr/rejected`;
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const client = mqtt.connect(mqttUrl, {
    clientId: bootstrap.clientId,
    username: bootstrap.username,
    password: bootstrap.token,
    ca: bootstrap.caCertificate,
    protocolVersion: 4,
    clean: true,
    reconnectPeriod: 0,
    connectTimeout: timeoutMs,
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    return await new Promise<CsrTry>((resolve) => {
      timer = setTimeout(() => resolve({ kind: 'lost', reason: `no answer within ${timeoutMs} ms` }), timeoutMs);
      client.on('error', (err) => {
        const code = (err as { code?: unknown }).code;
        if (typeof code === 'number') resolve({ kind: 'refused', connack: code });
        else resolve({ kind: 'lost', reason: `error: ${err.message}` });
      });
      client.on('close', () => resolve({ kind: 'lost', reason: 'connection closed' }));
      client.on('message', (topic, buf) => {
        let body: { requestId?: string } & Record<string, unknown>;
        try {
          body = JSON.parse(buf.toString('utf8')) as typeof body;
        } catch {
          return;
        }
        opts.observe?.(topic, body);
        // the answer topics are the device's, not the connection's: ignore answers to other sends
        if (body.requestId !== opts.requestId) return;
        if (topic === accepted) resolve({ kind: 'accepted', answer: body as unknown as MqttCsrAccepted });
        else if (topic === rejected) {
          const e = body as unknown as MqttError;
          resolve({ kind: 'rejected', code: e.code, message: e.message });
        }
      });
      client.once('connect', () => {
        if (opts.pipeline) {
          client.subscribe([accepted, rejected], { qos: 1 });
          client.publish(`devices/${id}/csr`, JSON.stringify({ requestId: opts.requestId, csr: csrPem }), { qos: 1 });
          return;
        }
        client
          .subscribeAsync([accepted, rejected], { qos: 1 })
          .then((granted) => {
            if (granted.some((g) => g.qos === 128)) throw new Error(`subscription refused: ${JSON.stringify(granted)}`);
            return client.publishAsync(`devices/${id}/csr`, JSON.stringify({ requestId: opts.requestId, csr: csrPem }), { qos: 1 });
          })
          .catch((err: unknown) => resolve({ kind: 'lost', reason: `subscribe/publish: ${(err as Error).message}` }));
      });
    });
  } finally {
    clearTimeout(timer);
    client.removeAllListeners('message');
    client.on('error', () => undefined);
    await client.endAsync(true).catch(() => undefined);
  }
}

/** Exponential back-off with ±20 % jitter (docs/protocol.md §15), `attempt` from 0. */
export function backoffMs(attempt: number, baseMs: number, capMs: number): number {
  const d = Math.min(capMs, baseMs * 2 ** attempt);
  return Math.round(d * (0.8 + Math.random() * 0.4));
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * EST simpleenroll (RFC 7030, docs/operations.md): HTTP Basic with the device id and the bootstrap
 * token, the CSR as base64 DER. Answers the status and the body (base64 PKCS#7 on 200, else
 * "<CODE>: <message>").
 */
export function estSimpleEnroll(port: number, bootstrap: Bootstrap, csrPem: string, timeoutMs = 15_000): Promise<{ status: number; body: string; code?: string }> {
  const der = Buffer.from(csrPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  const body = der.toString('base64');
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: 'localhost',
        port,
        method: 'POST',
        path: '/.well-known/est/simpleenroll',
        ca: bootstrap.caCertificate,
        auth: `${bootstrap.username}:${bootstrap.token}`,
        headers: { 'content-type': 'application/pkcs10', 'content-length': Buffer.byteLength(body) },
        timeout: timeoutMs,
        agent: false,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const code = status === 200 ? undefined : /^([A-Z_]+):/.exec(text)?.[1];
          resolve({ status, body: text, ...(code ? { code } : {}) });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`EST request timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}
