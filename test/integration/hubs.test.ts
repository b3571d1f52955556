/**
 * Smart-home hubs: a provisioned hub claims devices it discovers, for its owner, with their label
 * codes, and relays their provisioning over its own connection. Its topics reach its own children
 * only.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice, SimHub } from '../../firmware-sim/index.js';
import type { ClaimResponse, MqttError } from '../../schemas/types.js';
import { NETWORK, closed, nextJson, opensslCsr } from '../helpers/device.js';
import { snapshotDevice, startTestService, type TestService } from '../helpers/service.js';
import { waitUntil } from '../helpers/wait.js';

let ts: TestService;
let hub: SimHub;
const auth = (key: string) => ({ authorization: `Bearer ${key}` });

async function register(id: string, opts: { hub?: boolean; key?: string } = {}) {
  const claimCode = `label-${id}-code`;
  const res = await ts.running.api.inject({ method: 'POST', url: '/v1/devices', headers: auth(opts.key ?? ts.keys.factory), payload: { id, model: opts.hub ? 'hub' : 'thermostat', claimCode, ...(opts.hub ? { hub: true } : {}) } });
  expect(res.statusCode).toBe(201);
  return claimCode;
}

async function installedHub(id: string): Promise<SimHub> {
  const code = await register(id, { hub: true });
  const claim = (await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(ts.keys.installer), payload: { claimCode: code, owner: 'Dana', site: 'flat 4', network: NETWORK } })).json() as ClaimResponse;
  const h = new SimHub({ deviceId: id, bootstrap: claim.bootstrap! });
  await h.run();
  return h;
}

beforeAll(async () => {
  ts = await startTestService();
  hub = await installedHub('hub-1');
});
afterAll(async () => {
  await hub?.stop();
  await ts?.stop();
});

describe('hubs', () => {
  it('claims a discovered device for its owner and provisions it over the hub connection', async () => {
    const code = await register('child-1');
    await hub.onboard({ deviceId: 'child-1', model: 'thermostat', claimCode: code });
    const child = await ts.running.store.getDevice('child-1');
    expect(child).toMatchObject({ state: 'provisioned', hubId: 'hub-1', owner: 'Dana', site: 'flat 4', tenantId: 'default' });
    const events = await ts.running.store.listEvents('child-1');
    expect(events.find((e) => e.type === 'claimed')?.actor).toBe('device:hub-1');
    // audited as the hub's actions: the claim, and the issuance of the child's identity it relayed
    const audit = (await ts.running.store.listAudit({ deviceId: 'child-1', limit: 10 })).entries;
    expect(audit.map((e) => [e.action, e.actor, e.outcome])).toEqual([
      ['certificate.issue', 'device:hub-1', 'success'],
      ['device.claim', 'device:hub-1', 'success'],
    ]);
    expect(audit[0]).toMatchObject({ serial: child?.certificateSerial, details: { channel: 'mqtt', viaHub: 'hub-1' } });
    // the child got the hub's site network, encrypted to the child's own key (decrypted by the sim)
    expect(child?.config?.items.find((i) => i.id === 'network')?.status).toBe('applied');
  });

  it("pushes a profile change to a relayed child at once, on the hub's relay topic", async () => {
    const child = (await ts.running.store.getDevice('child-1'))!;
    expect(child.profileId).toBeDefined();
    const profile = (await ts.running.api.inject({ method: 'GET', url: `/v1/profiles/${child.profileId}`, headers: auth(ts.keys.admin) })).json() as {
      name: string;
      items: { id: string; type: string; data: Record<string, unknown> }[];
      [k: string]: unknown;
    };
    const { id: _id, version: _v, tenantId: _t, createdAt: _c, ...body } = profile as Record<string, unknown>;
    const items = profile.items.map((i) => (i.type === 'security-policy' ? { ...i, data: { minTlsVersion: '1.2', allowedTopics: [], firmwareFloor: '1.0.0', ...i.data, telemetryIntervalSeconds: 123 } } : i));
    // the hub is still subscribed to the child's config topic since onboarding
    const relayed = nextJson<string>(hub.client!, 'devices/hub-1/children/child-1/config', 5000);
    const put = await ts.running.api.inject({ method: 'PUT', url: `/v1/profiles/${child.profileId}`, headers: auth(ts.keys.admin), payload: { ...body, items } });
    expect(put.statusCode, put.body).toBe(200);
    const jws = await relayed;
    const claims = JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString('utf8')) as { deviceId: string; version: number; items: { data: Record<string, unknown> }[] };
    expect(claims.deviceId).toBe('child-1');
    expect(claims.version).toBe(child.config!.version + 1);
    expect(JSON.stringify(claims.items)).toContain('"telemetryIntervalSeconds":123');
    // the hub itself is on the profile too: it applies the change (the later tests need it provisioned)
    await waitUntil(async () => (await ts.running.store.getDevice('hub-1'))?.state === 'provisioned', 'the hub applied the new version');
  });

  it("refuses to claim another tenant's device, like a wrong code, and changes nothing", async () => {
    const other = await ts.tenant('neighbour');
    const code = await register('their-thermo', { key: other.factory });
    const before = await snapshotDevice(ts.running, 'their-thermo');
    await expect(hub.onboard({ deviceId: 'their-thermo', model: 'thermostat', claimCode: code }, 3000)).rejects.toMatchObject({ code: 'CLAIM_CODE_INVALID' });
    expect(await snapshotDevice(ts.running, 'their-thermo')).toEqual(before);
  });

  it('relays only for its own children: another device is refused and unchanged', async () => {
    const code = await register('not-mine');
    await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(ts.keys.installer), payload: { claimCode: code, owner: 'x', site: 'y' } });
    const before = await snapshotDevice(ts.running, 'not-mine');
    const client = hub.client!;
    await client.subscribeAsync(['devices/hub-1/children/not-mine/csr/rejected', 'devices/hub-1/children/not-mine/errors'], { qos: 1 });
    const rejected = nextJson<MqttError>(client, 'devices/hub-1/children/not-mine/csr/rejected');
    await client.publishAsync('devices/hub-1/children/not-mine/csr', JSON.stringify({ requestId: 'r', csr: opensslCsr().csrPem }), { qos: 1 });
    expect(await rejected).toMatchObject({ code: 'TOPIC_FORBIDDEN' });
    const err = nextJson<MqttError>(client, 'devices/hub-1/children/not-mine/errors');
    await client.publishAsync('devices/hub-1/children/not-mine/config/ack', JSON.stringify({ version: 1, items: [{ id: 'network', status: 'applied' }] }), { qos: 1 });
    expect(await err).toMatchObject({ code: 'TOPIC_FORBIDDEN' });
    expect(await snapshotDevice(ts.running, 'not-mine')).toEqual(before);
  });

  it("cannot subscribe to another hub's children; a device that is not a hub cannot act as one", async () => {
    const second = await installedHub('hub-2');
    try {
      const err = (await second.client!.subscribeAsync(['devices/hub-1/children/child-1/config', 'devices/hub-2/children/child-1/config'], { qos: 1 }).catch((e: { packet?: { granted: number[] } }) => e)) as { packet?: { granted: number[] } };
      // its own namespace is allowed (nothing is published there for devices it does not own)
      expect(err.packet?.granted ?? [1]).toEqual([128, 1]);
    } finally {
      await second.stop();
    }
    const code = await register('plain-thermo');
    const claim = (await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(ts.keys.installer), payload: { claimCode: code, owner: 'o', site: 's', network: NETWORK } })).json() as ClaimResponse;
    const plain = new SimDevice({ deviceId: 'plain-thermo', model: 'thermostat', bootstrap: claim.bootstrap! });
    await plain.run();
    const gone = closed(plain.client!);
    plain.client!.publish('devices/plain-thermo/hub/claim', JSON.stringify({ requestId: 'x', claimCode: 'whatever-code' }), { qos: 1 });
    await gone;
    await plain.stop();
  });
});
