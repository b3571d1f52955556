/** Device-side helpers for tests: real openssl CSRs, real mqtt.js clients over TLS. */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { ClaimResponse, NetworkSettings } from '../../schemas/types.js';
import type { TestService } from './service.js';

export const NETWORK: NetworkSettings = {
  wifi: { ssid: 'test-net', security: 'wpa2-psk', secret: 'correct horse battery' },
  ipv4: { mode: 'dhcp' },
};

export async function register(ts: TestService, opts: { id?: string; model?: string; claimCode?: string } = {}) {
  const id = opts.id ?? `dev-${randomBytes(5).toString('hex')}`;
  const claimCode = opts.claimCode ?? randomBytes(12).toString('hex');
  const res = await ts.running.api.inject({
    method: 'POST',
    url: '/v1/devices',
    headers: { authorization: `Bearer ${ts.keys.factory}` },
    payload: { id, model: opts.model ?? 'thermostat', claimCode },
  });
  if (res.statusCode !== 201) throw new Error(`register failed: ${res.body}`);
  return { id, claimCode };
}

export async function claim(ts: TestService, claimCode: string, extra: Record<string, unknown> = {}) {
  return ts.running.api.inject({
    method: 'POST',
    url: '/v1/claims',
    headers: { authorization: `Bearer ${ts.keys.installer}` },
    payload: { claimCode, owner: 'alice', site: 'home', network: NETWORK, ...extra },
  });
}

export async function registerAndClaim(ts: TestService, opts: { id?: string } = {}) {
  const { id, claimCode } = await register(ts, opts);
  const res = await claim(ts, claimCode);
  if (res.statusCode !== 201) throw new Error(`claim failed: ${res.body}`);
  return { id, claimCode, bootstrap: (res.json() as ClaimResponse).bootstrap! };
}

/** A key and a CSR made by the openssl CLI, as a device toolchain would. */
export function opensslCsr(kind: 'p256' | 'p384' | 'rsa2048' = 'p256', subject = '/CN=whatever') {
  const dir = mkdtempSync(join(tmpdir(), 'csr-'));
  try {
    const keyArgs =
      kind === 'rsa2048'
        ? ['-newkey', 'rsa:2048']
        : ['-newkey', 'ec', '-pkeyopt', `ec_paramgen_curve:${kind === 'p256' ? 'P-256' : 'P-384'}`];
    execFileSync('openssl', ['req', '-new', ...keyArgs, '-nodes', '-subj', subject, '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem')], {
      stdio: 'pipe',
    });
    return { keyPem: readFileSync(join(dir, 'k.pem'), 'utf8'), csrPem: readFileSync(join(dir, 'c.pem'), 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A CSR for an existing key. */
export function opensslCsrForKey(keyPem: string, subject = '/CN=whatever'): string {
  const dir = mkdtempSync(join(tmpdir(), 'csr-'));
  try {
    execFileSync('sh', ['-c', `cat > k.pem && openssl req -new -key k.pem -subj '${subject}' -out c.pem`], { cwd: dir, input: keyPem, stdio: ['pipe', 'pipe', 'pipe'] });
    return readFileSync(join(dir, 'c.pem'), 'utf8');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The same CSR with one bit of its signature flipped (proof of possession fails). */
export function corruptSignature(csrPem: string): string {
  const der = Buffer.from(csrPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  der[der.length - 3]! ^= 0x01;
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').trim();
  return `-----BEGIN CERTIFICATE REQUEST-----\n${b64}\n-----END CERTIFICATE REQUEST-----\n`;
}

const base: IClientOptions = { protocolVersion: 4, clean: true, reconnectPeriod: 0, connectTimeout: 5000 };

export function connectBootstrap(ts: TestService, b: NonNullable<ClaimResponse['bootstrap']>, over: IClientOptions = {}): Promise<MqttClient> {
  return mqtt.connectAsync(ts.mqttUrl, { ...base, clientId: b.clientId, username: b.username, password: b.token, ca: b.caCertificate, ...over });
}

export function connectOperational(ts: TestService, deviceId: string, keyPem: string, certPem: string, over: IClientOptions = {}): Promise<MqttClient> {
  return mqtt.connectAsync(ts.mqttUrl, { ...base, clientId: deviceId, key: keyPem, cert: certPem, ca: ts.running.ca.rootPem, ...over });
}

/** Connects and returns the CONNACK return code (0 when accepted), closing the client. */
export async function connackCode(url: string, opts: IClientOptions): Promise<number> {
  const client = mqtt.connect(url, { ...base, ...opts });
  try {
    return await new Promise<number>((resolve, reject) => {
      client.once('connect', () => resolve(0));
      client.once('error', (err) => {
        const code = (err as { code?: number }).code;
        if (typeof code === 'number') resolve(code);
        else reject(err);
      });
    });
  } finally {
    client.end(true);
  }
}

/** The next message on `topic`, parsed as JSON. */
export function nextJson<T = Record<string, unknown>>(client: MqttClient, topic: string, timeoutMs = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off('message', on);
      reject(new Error(`no message on ${topic} within ${timeoutMs} ms`));
    }, timeoutMs);
    const on = (t: string, payload: Buffer) => {
      if (t !== topic) return;
      clearTimeout(timer);
      client.off('message', on);
      try {
        resolve(JSON.parse(payload.toString('utf8')) as T);
      } catch {
        resolve(payload.toString('utf8') as unknown as T);
      }
    };
    client.on('message', on);
  });
}

/** Resolves when the client's connection closes. */
export function closed(client: MqttClient, timeoutMs = 5000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!client.connected) return resolve();
    const timer = setTimeout(() => reject(new Error('connection not closed')), timeoutMs);
    client.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
