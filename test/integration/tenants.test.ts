/** No API key of one tenant reads or changes another tenant's devices, profiles, keys or reports. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClaimResponse, ErrorBody, FleetReport, Profile } from '../../schemas/types.js';
import { NETWORK } from '../helpers/device.js';
import { startTestService, type TenantKeys, type TestService } from '../helpers/service.js';

let ts: TestService;
let a: TenantKeys;
let b: TenantKeys;
const auth = (key: string) => ({ authorization: `Bearer ${key}` });

const PROFILE = {
  name: 'Lobby cameras',
  deadlineSeconds: 3600,
  items: [
    { id: 'network', type: 'network', required: true, priority: 0, await: true, data: {} },
    { id: 'security', type: 'security-policy', required: true, priority: 10, await: false, data: { minTlsVersion: '1.2', telemetryIntervalSeconds: 30, allowedTopics: ['devices/{deviceId}/telemetry'], firmwareFloor: '2.0.0' } },
  ],
};

beforeAll(async () => {
  ts = await startTestService();
  a = await ts.tenant('acme');
  b = await ts.tenant('globex');
  for (const [keys, id] of [[a, 'acme-cam-1'], [b, 'globex-cam-1']] as const) {
    const reg = await ts.running.api.inject({ method: 'POST', url: '/v1/devices', headers: auth(keys.factory), payload: { id, model: 'camera', claimCode: `${id}-secret-code` } });
    expect(reg.statusCode).toBe(201);
    const prof = await ts.running.api.inject({ method: 'PUT', url: '/v1/profiles/lobby', headers: auth(keys.admin), payload: PROFILE });
    expect(prof.statusCode).toBe(200);
  }
});
afterAll(async () => {
  await ts?.stop();
});

function code(res: { statusCode: number; json: () => unknown }) {
  return [res.statusCode, (res.json() as ErrorBody).code];
}

describe('tenant isolation', () => {
  it('devices: another tenant sees 404 DEVICE_NOT_FOUND for every read and action, and nothing changes', async () => {
    const before = await ts.running.store.getDevice('globex-cam-1');
    for (const key of [a.admin, a.factory, a.installer, a.viewer]) {
      expect(code(await ts.running.api.inject({ url: '/v1/devices/globex-cam-1', headers: auth(key) }))).toEqual([404, 'DEVICE_NOT_FOUND']);
      expect(code(await ts.running.api.inject({ url: '/v1/devices/globex-cam-1/history', headers: auth(key) }))).toEqual([404, 'DEVICE_NOT_FOUND']);
    }
    for (const action of ['release', 'revoke', 'decommission', 'config/push', 'renew']) {
      expect(code(await ts.running.api.inject({ method: 'POST', url: `/v1/devices/globex-cam-1/${action}`, headers: auth(a.admin), payload: {} }))).toEqual([404, 'DEVICE_NOT_FOUND']);
    }
    expect(code(await ts.running.api.inject({ method: 'POST', url: '/v1/devices/globex-cam-1/bootstrap', headers: auth(a.installer) }))).toEqual([404, 'DEVICE_NOT_FOUND']);
    expect(code(await ts.running.api.inject({ method: 'POST', url: '/v1/devices/globex-cam-1/reprovision', headers: auth(a.installer) }))).toEqual([404, 'DEVICE_NOT_FOUND']);
    const list = await ts.running.api.inject({ url: '/v1/devices?limit=1000', headers: auth(a.viewer) });
    expect((list.json() as { items: { id: string }[] }).items.map((d) => d.id)).toEqual(['acme-cam-1']);
    expect(await ts.running.store.getDevice('globex-cam-1')).toEqual(before);
  });

  it("claims: the right code of another tenant's device is CLAIM_CODE_INVALID, like a wrong one", async () => {
    const before = await ts.running.store.getDevice('globex-cam-1');
    const res = await ts.running.api.inject({
      method: 'POST',
      url: '/v1/claims',
      headers: auth(a.installer),
      payload: { claimCode: 'globex-cam-1-secret-code', owner: 'mallory', site: 'x', network: NETWORK },
    });
    expect(code(res)).toEqual([403, 'CLAIM_CODE_INVALID']);
    expect(await ts.running.store.getDevice('globex-cam-1')).toEqual(before);
    const own = await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(b.installer), payload: { claimCode: 'globex-cam-1-secret-code', owner: 'globex', site: 'hq', network: NETWORK } });
    expect(own.statusCode).toBe(201);
    expect((own.json() as ClaimResponse).device).toMatchObject({ tenantId: 'globex', profileId: 'default' });
  });

  it('profiles: each tenant has its own, invisible and unchangeable to the other', async () => {
    const mine = (await ts.running.api.inject({ url: '/v1/profiles', headers: auth(a.viewer) })).json() as { items: Profile[] };
    expect(mine.items.map((p) => [p.tenantId, p.id])).toEqual([
      ['acme', 'default'],
      ['acme', 'lobby'],
    ]);
    // the same id in two tenants is two profiles: acme's change leaves globex's at version 1
    await ts.running.api.inject({ method: 'PUT', url: '/v1/profiles/lobby', headers: auth(a.admin), payload: { ...PROFILE, deadlineSeconds: 7200 } });
    expect((await ts.running.store.getProfile('acme', 'lobby'))?.version).toBe(2);
    expect((await ts.running.store.getProfile('globex', 'lobby'))?.version).toBe(1);
    expect(code(await ts.running.api.inject({ url: '/v1/profiles/lobby?version=2', headers: auth(b.viewer) }))).toEqual([404, 'PROFILE_NOT_FOUND']);
    // claiming with another tenant's profile id that this tenant lacks
    await ts.running.api.inject({ method: 'POST', url: '/v1/devices', headers: auth(a.factory), payload: { id: 'acme-cam-2', model: 'camera', claimCode: 'acme-cam-2-secret' } });
    await ts.running.api.inject({ method: 'PUT', url: '/v1/profiles/globex-only', headers: auth(b.admin), payload: PROFILE });
    const res = await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(a.installer), payload: { claimCode: 'acme-cam-2-secret', owner: 'o', site: 's', profileId: 'globex-only' } });
    expect(code(res)).toEqual([404, 'PROFILE_NOT_FOUND']);
    expect((await ts.running.store.getDevice('acme-cam-2'))?.state).toBe('registered');
  });

  it('reports and CSV cover the caller tenant only', async () => {
    const ra = (await ts.running.api.inject({ url: '/v1/reports/fleet', headers: auth(a.viewer) })).json() as FleetReport;
    const rb = (await ts.running.api.inject({ url: '/v1/reports/fleet', headers: auth(b.viewer) })).json() as FleetReport;
    expect(ra.tenantId).toBe('acme');
    expect(ra.byState).toEqual({ registered: 2 });
    expect(rb.tenantId).toBe('globex');
    expect(rb.byState).toEqual({ claimed: 1 });
    const csv = (await ts.running.api.inject({ url: '/v1/reports/devices.csv', headers: auth(a.viewer) })).body;
    expect(csv).toContain('acme-cam-1');
    expect(csv).not.toContain('globex');
  });

  it('API keys: listing, creating and deleting stay within the tenant', async () => {
    const list = (await ts.running.api.inject({ url: '/v1/admin/api-keys', headers: auth(a.admin) })).json() as { items: { id: string; tenantId: string }[] };
    expect(list.items.length).toBeGreaterThan(0);
    expect(new Set(list.items.map((k) => k.tenantId))).toEqual(new Set(['acme']));
    const theirs = (await ts.running.api.inject({ url: '/v1/admin/api-keys', headers: auth(b.admin) })).json() as { items: { id: string }[] };
    const victim = theirs.items[0]!.id;
    expect(code(await ts.running.api.inject({ method: 'DELETE', url: `/v1/admin/api-keys/${victim}`, headers: auth(a.admin) }))).toEqual([404, 'API_KEY_NOT_FOUND']);
    expect(await ts.running.store.getApiKey(victim)).toBeDefined();
    const created = await ts.running.api.inject({ method: 'POST', url: '/v1/admin/api-keys', headers: auth(a.admin), payload: { name: 'x', role: 'viewer' } });
    expect((created.json() as { tenantId: string }).tenantId).toBe('acme');
  });

  it('tenants: only the service tenant creates them; a tenant reads and changes only itself; webhook secrets never come back', async () => {
    expect(code(await ts.running.api.inject({ method: 'POST', url: '/v1/tenants', headers: auth(a.admin), payload: { id: 'evil', name: 'x' } }))).toEqual([403, 'ROLE_FORBIDDEN']);
    expect(await ts.running.store.getTenant('evil')).toBeUndefined();
    const patched = await ts.running.api.inject({
      method: 'PATCH',
      url: '/v1/tenant',
      headers: auth(a.admin),
      payload: { provisionalWindowDays: 7, webhook: { url: 'http://127.0.0.1:9/hook', secret: 'a-very-long-webhook-secret' } },
    });
    expect(patched.json()).toMatchObject({ id: 'acme', provisionalWindowDays: 7, webhook: { url: 'http://127.0.0.1:9/hook' } });
    expect(patched.body).not.toContain('a-very-long-webhook-secret');
    expect((await ts.running.api.inject({ url: '/v1/tenant', headers: auth(a.admin) })).body).not.toContain('a-very-long-webhook-secret');
    expect((await ts.running.store.getTenant('globex'))?.provisionalWindowDays).toBe(30);
    // stored sealed, opened only for delivery
    expect(JSON.stringify(await ts.running.store.getTenant('acme'))).not.toContain('a-very-long-webhook-secret');
    expect(await ts.running.tenants.webhookOf('acme')).toEqual({ url: 'http://127.0.0.1:9/hook', secret: 'a-very-long-webhook-secret' });
    expect(code(await ts.running.api.inject({ url: '/v1/tenant', headers: auth(a.viewer) }))).toEqual([403, 'ROLE_FORBIDDEN']);
    const withCredentials = await ts.running.api.inject({ method: 'PATCH', url: '/v1/tenant', headers: auth(a.admin), payload: { webhook: { url: 'https://user:pw@example.com/hook' } } });
    expect(code(withCredentials)).toEqual([400, 'WEBHOOK_URL_INVALID']);
    expect((await ts.running.store.getTenant('acme'))?.webhook?.url).toBe('http://127.0.0.1:9/hook');
  });
});
