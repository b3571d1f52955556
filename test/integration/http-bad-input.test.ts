/** Every bad HTTP input gets a stable code and changes nothing stored. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ErrorBody } from '../../schemas/types.js';
import { ManualClock } from '../helpers/clock.js';
import { NETWORK, claim, register } from '../helpers/device.js';
import { snapshotDevice, startTestService, type TestService } from '../helpers/service.js';

let ts: TestService;
beforeAll(async () => {
  ts = await startTestService({ http: { bodyLimitBytes: 4096 } });
});
afterAll(async () => {
  await ts?.stop();
});

const auth = (key: string) => ({ authorization: `Bearer ${key}` });

function expectError(res: { statusCode: number; json: () => unknown }, status: number, code: string) {
  expect(res.statusCode).toBe(status);
  const body = res.json() as ErrorBody;
  expect(body.code).toBe(code);
  expect(body.statusCode).toBe(status);
  expect(typeof body.message).toBe('string');
  return body;
}

describe('claims', () => {
  it('a wrong claim code: CLAIM_CODE_INVALID, nothing changes', async () => {
    const { id } = await register(ts);
    const before = await snapshotDevice(ts.running, id);
    expectError(await claim(ts, 'not-the-right-code', { deviceId: id }), 403, 'CLAIM_CODE_INVALID');
    expect(await snapshotDevice(ts.running, id)).toEqual(before);
  });

  it('an unknown device answers exactly like a wrong code (no existence oracle)', async () => {
    const { id, claimCode } = await register(ts);
    const wrongCode = await claim(ts, 'ZZZZ-ZZZZ-ZZZZ', { deviceId: id });
    const unknownDevice = await claim(ts, claimCode, { deviceId: 'no-such-device' });
    expectError(unknownDevice, 403, 'CLAIM_CODE_INVALID');
    expect(unknownDevice.json()).toEqual(wrongCode.json());
    expect((await ts.running.store.getDevice(id))?.state).toBe('registered');
    expect(await ts.running.store.getDevice('no-such-device')).toBeUndefined();
  });

  it('an already-claimed device: DEVICE_ALREADY_CLAIMED, the first claim and its credential stand', async () => {
    const { id, claimCode } = await register(ts);
    expect((await claim(ts, claimCode)).statusCode).toBe(201);
    const before = await snapshotDevice(ts.running, id);
    expectError(await claim(ts, claimCode, { owner: 'mallory' }), 409, 'DEVICE_ALREADY_CLAIMED');
    expect(await snapshotDevice(ts.running, id)).toEqual(before);
    expect(before.device?.owner).toBe('alice');
  });

  it('the code is case-insensitive and ignores label grouping', async () => {
    const { id } = await register(ts, { claimCode: 'abcd-efgh-2345-6789' });
    const res = await claim(ts, 'ABCD EFGH 2345 6789');
    expect(res.statusCode).toBe(201);
    expect((res.json() as { device: { id: string } }).device.id).toBe(id);
  });

  it('network settings without a secret for a protected network: NETWORK_SECRET_REQUIRED', async () => {
    const { id, claimCode } = await register(ts);
    const before = await snapshotDevice(ts.running, id);
    const res = await claim(ts, claimCode, { network: { wifi: { ssid: 'x', security: 'wpa2-psk' } } });
    expectError(res, 400, 'NETWORK_SECRET_REQUIRED');
    expect(await snapshotDevice(ts.running, id)).toEqual(before);
  });
});

describe('devices', () => {
  it('an unknown device: DEVICE_NOT_FOUND', async () => {
    expectError(await ts.running.api.inject({ url: '/v1/devices/nope', headers: auth(ts.keys.viewer) }), 404, 'DEVICE_NOT_FOUND');
    expectError(await ts.running.api.inject({ url: '/v1/devices/nope/history', headers: auth(ts.keys.viewer) }), 404, 'DEVICE_NOT_FOUND');
  });

  it('a duplicate id: DEVICE_EXISTS; a duplicate claim code: CLAIM_CODE_IN_USE; the first record stands', async () => {
    const { id, claimCode } = await register(ts);
    const before = await snapshotDevice(ts.running, id);
    const post = (payload: Record<string, unknown>) => ts.running.api.inject({ method: 'POST', url: '/v1/devices', headers: auth(ts.keys.factory), payload });
    expectError(await post({ id, model: 'camera', claimCode: 'another-code-123' }), 409, 'DEVICE_EXISTS');
    expectError(await post({ id: `${id}-b`, model: 'camera', claimCode }), 409, 'CLAIM_CODE_IN_USE');
    expect(await snapshotDevice(ts.running, id)).toEqual(before);
    expect(await ts.running.store.getDevice(`${id}-b`)).toBeUndefined();
  });

  it('malformed JSON, wrong schema, oversized body, wrong media type: coded 4xx and nothing stored', async () => {
    const count = async () => Object.values(await ts.running.store.countDevicesByState()).reduce((a, b) => a + (b ?? 0), 0);
    const n = await count();
    const send = (payload: string, type = 'application/json') =>
      ts.running.api.inject({ method: 'POST', url: '/v1/devices', headers: { ...auth(ts.keys.factory), 'content-type': type }, payload });
    expectError(await send('{"id": "x", '), 400, 'MALFORMED_JSON');
    expectError(await send(''), 400, 'MALFORMED_JSON');
    expectError(await send(JSON.stringify({ id: 'x1', model: 'm' })), 400, 'INVALID_BODY'); // neither a claim code nor a birth serial
    expectError(await send(JSON.stringify({ id: 'x1', model: 'm', birthSerial: 'not hex' })), 400, 'INVALID_BODY');
    expectError(await send(JSON.stringify({ id: 'x2', model: 'm', claimCode: 'long-enough-1', admin: true })), 400, 'INVALID_BODY');
    expectError(await send(JSON.stringify({ id: 'bad id with spaces', model: 'm', claimCode: 'long-enough-1' })), 400, 'INVALID_BODY');
    expectError(await send(JSON.stringify({ id: 42, model: 'm', claimCode: 'long-enough-1' })), 400, 'INVALID_BODY');
    expectError(await send(JSON.stringify({ id: 'x3', model: 'm', claimCode: 'short' })), 400, 'INVALID_BODY');
    expectError(await send(JSON.stringify({ id: 'x4', model: 'm', claimCode: 'a'.repeat(8000) })), 413, 'PAYLOAD_TOO_LARGE');
    expectError(await send('id=x5', 'application/x-www-form-urlencoded'), 415, 'UNSUPPORTED_MEDIA_TYPE');
    expect(await count()).toBe(n);
  });

  it('a claim code that is long enough for the schema but has under 8 letters or digits: CLAIM_CODE_TOO_SHORT', async () => {
    const res = await ts.running.api.inject({
      method: 'POST',
      url: '/v1/devices',
      headers: auth(ts.keys.factory),
      payload: { id: 'short-code', model: 'm', claimCode: 'ab-cd-ef-g' },
    });
    expectError(res, 400, 'CLAIM_CODE_TOO_SHORT');
    expect(await ts.running.store.getDevice('short-code')).toBeUndefined();
  });

  it('bad query parameters: INVALID_QUERY', async () => {
    expectError(await ts.running.api.inject({ url: '/v1/devices?limit=0', headers: auth(ts.keys.viewer) }), 400, 'INVALID_QUERY');
    expectError(await ts.running.api.inject({ url: '/v1/devices?state=flying', headers: auth(ts.keys.viewer) }), 400, 'INVALID_QUERY');
  });

  it('lists devices with keyset paging', async () => {
    const ids = [`page-${Date.now()}-a`, `page-${Date.now()}-b`, `page-${Date.now()}-c`];
    for (const id of ids) await register(ts, { id });
    const first = await ts.running.api.inject({ url: `/v1/devices?limit=2&after=page-${Date.now() - 100000}`, headers: auth(ts.keys.viewer) });
    expect(first.statusCode).toBe(200);
    const body = first.json() as { items: { id: string }[]; next?: string };
    expect(body.items).toHaveLength(2);
    expect(body.next).toBe(body.items[1]!.id);
  });
});

describe('authentication and roles', () => {
  it('no key: AUTH_REQUIRED; a wrong key: AUTH_INVALID; a role without the right: ROLE_FORBIDDEN', async () => {
    const payload = { id: 'auth-test', model: 'm', claimCode: 'long-enough-1' };
    expectError(await ts.running.api.inject({ method: 'POST', url: '/v1/devices', payload }), 401, 'AUTH_REQUIRED');
    expectError(await ts.running.api.inject({ method: 'POST', url: '/v1/devices', payload, headers: auth('pdk_0000000000000000_' + 'A'.repeat(43)) }), 401, 'AUTH_INVALID');
    expectError(await ts.running.api.inject({ method: 'POST', url: '/v1/devices', payload, headers: { authorization: 'Basic abc' } }), 401, 'AUTH_INVALID');
    expectError(await ts.running.api.inject({ method: 'POST', url: '/v1/devices', payload, headers: auth(ts.keys.viewer) }), 403, 'ROLE_FORBIDDEN');
    expectError(await ts.running.api.inject({ method: 'POST', url: '/v1/devices', payload, headers: auth(ts.keys.installer) }), 403, 'ROLE_FORBIDDEN');
    expectError(await ts.running.api.inject({ method: 'POST', url: '/v1/claims', payload: { claimCode: 'x', owner: 'o', site: 's' }, headers: auth(ts.keys.factory) }), 403, 'ROLE_FORBIDDEN');
    expectError(await ts.running.api.inject({ method: 'GET', url: '/v1/devices' }), 401, 'AUTH_REQUIRED');
    expect(await ts.running.store.getDevice('auth-test')).toBeUndefined();
  });

  it('an admin creates keys; the secret is shown once and only its hash is stored', async () => {
    const res = await ts.running.api.inject({ method: 'POST', url: '/v1/admin/api-keys', headers: auth(ts.keys.admin), payload: { name: 'line 3', role: 'factory' } });
    expect(res.statusCode).toBe(201);
    const key = res.json() as { id: string; secret: string; role: string };
    expect(key.role).toBe('factory');
    const stored = await ts.running.store.getApiKey(key.id);
    expect(JSON.stringify(stored)).not.toContain(key.secret.slice('pdk_'.length + 16 + 1)); // the 43-character secret part (it may contain '_')
    const use = await ts.running.api.inject({ method: 'POST', url: '/v1/devices', headers: auth(key.secret), payload: { id: `k-${key.id}`, model: 'm', claimCode: 'long-enough-1' + key.id } });
    expect(use.statusCode).toBe(201);
    expectError(await ts.running.api.inject({ method: 'POST', url: '/v1/admin/api-keys', headers: auth(ts.keys.factory), payload: { name: 'x', role: 'admin' } }), 403, 'ROLE_FORBIDDEN');
  });

  it('unknown routes: NOT_FOUND', async () => {
    expectError(await ts.running.api.inject({ url: '/v1/nothing' }), 404, 'NOT_FOUND');
  });
});

describe('claim throttling (pinned clock)', () => {
  it('throttles guesses at one device across clients, and says the same for a device that does not exist', async () => {
    const clock = new ManualClock();
    const t = await startTestService({ claims: { maxFailedAttempts: 3, lockoutSeconds: 60 } }, { clock });
    try {
      const { id, claimCode } = await register(t);
      const guess = (deviceId: string, client: string, code = 'wrong-guess-1234') =>
        t.running.api.inject({ method: 'POST', url: '/v1/claims', remoteAddress: client, headers: { authorization: `Bearer ${t.keys.installer}` }, payload: { claimCode: code, deviceId, owner: 'o', site: 's' } });
      // three different clients, one device each time: the device is locked, not the clients
      for (const client of ['10.0.0.1', '10.0.0.2', '10.0.0.3']) expectError(await guess(id, client), 403, 'CLAIM_CODE_INVALID');
      const locked = await guess(id, '10.0.0.4', claimCode);
      expect(expectError(locked, 429, 'CLAIM_RATE_LIMITED').retryAfterSeconds).toBe(60);
      expect((await t.running.store.getDevice(id))?.state).toBe('registered');
      // an unknown device id behaves the same way
      for (const client of ['10.0.1.1', '10.0.1.2', '10.0.1.3']) expectError(await guess('no-such-device', client), 403, 'CLAIM_CODE_INVALID');
      expectError(await guess('no-such-device', '10.0.1.4'), 429, 'CLAIM_RATE_LIMITED');
      // another client may still claim other devices, and the right code works after the window
      const other = await register(t);
      expect((await guess(other.id, '10.0.0.9', other.claimCode)).statusCode).toBe(201);
      clock.advance(60_000);
      expect((await guess(id, '10.0.0.4', claimCode)).statusCode).toBe(201);
    } finally {
      await t.stop();
    }
  });

  it('locks a client out after too many wrong codes, says when to retry, and lets it in after the window', async () => {
    const clock = new ManualClock();
    const t = await startTestService({ claims: { maxFailedAttempts: 3, lockoutSeconds: 60 } }, { clock });
    try {
      const { id, claimCode } = await register(t);
      for (let i = 0; i < 3; i++) expectError(await claim(t, `wrong-${i}-xxxxxxxx`), 403, 'CLAIM_CODE_INVALID');
      clock.advance(10_000);
      const limited = await claim(t, claimCode);
      const body = expectError(limited, 429, 'CLAIM_RATE_LIMITED');
      expect(body.retryAfterSeconds).toBe(50);
      expect(limited.headers['retry-after']).toBe('50');
      expect((await t.running.store.getDevice(id))?.state).toBe('registered');
      clock.advance(50_000);
      expect((await claim(t, claimCode, { network: NETWORK })).statusCode).toBe(201);
    } finally {
      await t.stop();
    }
  });
});
