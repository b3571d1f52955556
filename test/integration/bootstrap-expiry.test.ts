/**
 * Pending bootstrap credentials expire and are cleaned up (docs/operations.md "Limits"): the
 * periodic sweep deletes the record of a credential that expired unused, counts it, and leaves the
 * device claimed; the stall scan reports it at its deadline and a re-issued credential provisions
 * it. A hub's child, whose credential nobody ever sees, is still onboarded after the sweep. The
 * clock is pinned (starting in the past, so certificates issued after moving it are valid for the
 * simulated devices, which use real time); the sweep runs every second.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice, SimHub } from '../../firmware-sim/index.js';
import type { ClaimResponse, MqttCsrAccepted } from '../../schemas/types.js';
import { EXPIRED_TOKEN_GRACE_SECONDS } from '../../src/provisioning/index.js';
import { ManualClock } from '../helpers/clock.js';
import { claim, connackCode, nextJson, opensslCsr, registerAndClaim } from '../helpers/device.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { waitUntil } from '../helpers/wait.js';

const TTL = 60;
const START = Date.now() - 20 * 60_000;
const clock = new ManualClock(new Date(START));
let ts: TestService;
const auth = (key: string) => ({ authorization: `Bearer ${key}` });

async function expiredCount(): Promise<number> {
  const res = await ts.running.api.inject({ method: 'GET', url: '/metrics', headers: auth(ts.keys.viewer) });
  return Number(/^provisiond_bootstrap_tokens_expired_total (\d+)$/m.exec(res.body)?.[1]);
}

beforeAll(async () => {
  ts = await startTestService({ bootstrap: { tokenTtlSeconds: TTL, sweepIntervalSeconds: 1 } }, { clock });
});
afterAll(async () => ts?.stop());

describe('expired bootstrap credentials', () => {
  it('are deleted by the sweep and counted; the device stays claimed, stalls at its deadline, and a re-issued credential provisions it', async () => {
    const abandoned = await registerAndClaim(ts);
    const jti = (await ts.running.store.getDevice(abandoned.id))!.bootstrapJti!;
    // a device provisioned in time keeps its (consumed) credential record
    const done = await registerAndClaim(ts);
    const sim = new SimDevice({ deviceId: done.id, model: 'thermostat', bootstrap: done.bootstrap });
    await sim.run();
    await sim.stop();
    const usedJti = (await ts.running.store.getDevice(done.id))!.bootstrapJti!;

    // expired, but within the grace period: kept
    clock.advance((TTL + 1) * 1000);
    await new Promise((r) => setTimeout(r, 1500));
    expect(await ts.running.store.getBootstrapToken(jti)).toBeDefined();
    // past it: the next sweep deletes the record
    clock.advance(EXPIRED_TOKEN_GRACE_SECONDS * 1000);
    await waitUntil(async () => (await ts.running.store.getBootstrapToken(jti)) === undefined, 'the sweep deleted the expired credential');
    expect(await expiredCount()).toBe(1);
    expect((await ts.running.store.getBootstrapToken(usedJti))?.consumedAt).toBeDefined();
    const device = (await ts.running.store.getDevice(abandoned.id))!;
    expect(device.state).toBe('claimed');
    // the device presenting it is answered as before: expired (CONNACK 4)
    const b = abandoned.bootstrap;
    expect(await connackCode(ts.mqttUrl, { clientId: b.clientId, username: b.username, password: b.token, ca: b.caCertificate })).toBe(4);

    // the stall scan reports it at its deadline
    const now = clock.now();
    clock.set(new Date(Date.parse(device.deadlineAt!) + 1000));
    expect((await ts.running.lifecycle.scanStalls()).stalled).toContain(abandoned.id);
    clock.set(now);
    expect((await ts.running.store.getDevice(abandoned.id))?.state).toBe('stalled');

    // the installer re-issues a credential; it provisions the device
    const res = await ts.running.api.inject({ method: 'POST', url: `/v1/devices/${abandoned.id}/bootstrap`, headers: auth(ts.keys.installer) });
    expect(res.statusCode).toBe(201);
    const fresh = new SimDevice({ deviceId: abandoned.id, model: 'thermostat', bootstrap: (res.json() as ClaimResponse).bootstrap! });
    await fresh.run();
    await fresh.stop();
    expect((await ts.running.store.getDevice(abandoned.id))?.state).toBe('provisioned');
    expect(await expiredCount()).toBe(1);
  });

  it("do not stop a hub from onboarding a child it claimed before the sweep (the child's credential is never shown)", async () => {
    // a provisioned hub
    const hubId = `hub-${Date.now()}`;
    const registered = await ts.running.api.inject({ method: 'POST', url: '/v1/devices', headers: auth(ts.keys.factory), payload: { id: hubId, model: 'hub', claimCode: `label-${hubId}`, hub: true } });
    expect(registered.statusCode).toBe(201);
    const hubClaim = { id: hubId, bootstrap: ((await claim(ts, `label-${hubId}`)).json() as ClaimResponse).bootstrap! };
    const hub = new SimHub({ deviceId: hubClaim.id, bootstrap: hubClaim.bootstrap });
    await hub.run();
    try {
      const client = hub.client!;
      const childId = `child-${Date.now()}`;
      const code = `label-${childId}`;
      const reg = await ts.running.api.inject({ method: 'POST', url: '/v1/devices', headers: auth(ts.keys.factory), payload: { id: childId, model: 'thermostat', claimCode: code } });
      expect(reg.statusCode).toBe(201);
      // the hub claims the child...
      const t = (leaf: string) => `devices/${hubClaim.id}/${leaf}`;
      await client.subscribeAsync([t('hub/claim/accepted'), t(`children/${childId}/csr/accepted`), t(`children/${childId}/csr/rejected`)], { qos: 1 });
      const claimed = nextJson(client, t('hub/claim/accepted'));
      await client.publishAsync(t('hub/claim'), JSON.stringify({ requestId: 'c1', claimCode: code, deviceId: childId }), { qos: 1 });
      await claimed;
      const jti = (await ts.running.store.getDevice(childId))!.bootstrapJti!;
      const before = await expiredCount();
      // ...and its credential expires and is swept before the child's CSR comes
      clock.advance((TTL + EXPIRED_TOKEN_GRACE_SECONDS + 1) * 1000);
      await waitUntil(async () => (await ts.running.store.getBootstrapToken(jti)) === undefined, 'the sweep deleted the child credential');
      expect(await expiredCount()).toBe(before + 1);
      const accepted = nextJson<MqttCsrAccepted>(client, t(`children/${childId}/csr/accepted`));
      await client.publishAsync(t(`children/${childId}/csr`), JSON.stringify({ requestId: 'r1', csr: opensslCsr().csrPem }), { qos: 1 });
      expect((await accepted).requestId).toBe('r1');
      expect((await ts.running.store.getDevice(childId))?.state).toBe('identity_issued');
      expect((await ts.running.store.getBootstrapToken(jti))?.consumedAt).toBeDefined();
    } finally {
      await hub.stop();
    }
  });
});
