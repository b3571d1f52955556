/**
 * GET /metrics after a small fleet: every family the service exports, with the values the run
 * implies (devices provisioned, certificates issued, stage latencies observed, a refusal counted
 * under its code, store calls timed, MQTT connections counted by session kind).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice } from '../../firmware-sim/index.js';
import { connackCode, registerAndClaim } from '../helpers/device.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { waitUntil } from '../helpers/wait.js';

const N = 3;
let ts: TestService;
const ids: string[] = [];
let firstBootstrap: Awaited<ReturnType<typeof registerAndClaim>>['bootstrap'];

beforeAll(async () => {
  ts = await startTestService();
  for (let i = 0; i < N; i++) {
    const { id, bootstrap } = await registerAndClaim(ts);
    ids.push(id);
    firstBootstrap ??= bootstrap;
    const device = new SimDevice({ deviceId: id, model: 'thermostat', bootstrap });
    try {
      await device.run();
    } finally {
      await device.stop();
    }
  }
}, 60_000);
afterAll(async () => {
  await ts?.stop();
});

async function scrape(): Promise<string> {
  const res = await ts.running.api.inject({ url: '/metrics', headers: { authorization: `Bearer ${ts.keys.admin}` } });
  expect(res.statusCode).toBe(200);
  return res.body;
}

/** The sample `name{labels}` of the exposition (labels in any order), undefined when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

describe('GET /metrics after a small fleet', () => {
  it('counts devices by state from the store, and the outcomes', async () => {
    const text = await scrape();
    expect(sample(text, 'provisiond_devices', { state: 'provisioned' })).toBe(N);
    expect(sample(text, 'provisiond_device_outcomes_total', { outcome: 'provisioned' })).toBe(N);
    expect(sample(text, 'provisiond_device_outcomes_total', { outcome: 'failed' })).toBe(0);
  });

  it('counts certificates issued, and a revocation', async () => {
    expect(sample(await scrape(), 'provisiond_certificates_total', { operation: 'issued' })).toBe(N);
    const res = await ts.running.api.inject({ method: 'POST', url: `/v1/devices/${ids[0]}/revoke`, headers: { authorization: `Bearer ${ts.keys.admin}` }, payload: {} });
    expect(res.statusCode).toBe(200);
    await waitUntil(async () => sample(await scrape(), 'provisiond_device_outcomes_total', { outcome: 'revoked' }) === 1, 'the revocation is counted');
    const text = await scrape();
    expect(sample(text, 'provisiond_certificates_total', { operation: 'revoked' })).toBe(1);
  });

  it('times the provisioning stages', async () => {
    const text = await scrape();
    for (const stage of ['claim_to_identity', 'identity_to_provisioned', 'claim_to_provisioned']) {
      expect(sample(text, 'provisiond_provisioning_stage_seconds_count', { stage }), stage).toBe(N);
      expect(sample(text, 'provisiond_provisioning_stage_seconds_sum', { stage }), stage).toBeGreaterThanOrEqual(0);
    }
    expect(sample(text, 'provisiond_provisioning_stage_seconds_sum', { stage: 'claim_to_provisioned' })).toBeLessThan(600);
  });

  it('counts MQTT connections by session kind, and a refused CONNECT by its code', async () => {
    let text = await scrape();
    expect(sample(text, 'provisiond_mqtt_connects_total', { kind: 'bootstrap' })).toBeGreaterThanOrEqual(N);
    expect(sample(text, 'provisiond_mqtt_connects_total', { kind: 'operational' })).toBeGreaterThanOrEqual(N);
    await waitUntil(async () => sample(await scrape(), 'provisiond_mqtt_connections', { kind: 'operational' }) === 0, 'the closed connections leave the gauge');
    // a used bootstrap credential: CONNACK 4, counted with the code the broker refused it with
    expect(await connackCode(ts.mqttUrl, { clientId: ids[1]!, username: ids[1]!, password: firstBootstrap.token, ca: firstBootstrap.caCertificate })).toBe(4);
    text = await scrape();
    const refusals = text.split('\n').filter((l) => l.startsWith('provisiond_mqtt_refusals_total{'));
    expect(refusals.some((l) => /code="[A-Z_]+"\} [1-9]/.test(l)), refusals.join('\n')).toBe(true);
  });

  it('counts HTTP error answers by code', async () => {
    const res = await ts.running.api.inject({ method: 'POST', url: '/v1/claims', headers: { authorization: `Bearer ${ts.keys.installer}` }, payload: { claimCode: 'NOT-A-REAL-CODE-123', owner: 'o', site: 's' } });
    expect(res.json().code).toBe('CLAIM_CODE_INVALID');
    const noKey = await ts.running.api.inject({ url: '/v1/devices' });
    expect(noKey.statusCode).toBe(401);
    const text = await scrape();
    expect(sample(text, 'provisiond_http_errors_total', { code: 'CLAIM_CODE_INVALID' })).toBe(1);
    expect(sample(text, 'provisiond_http_errors_total', { code: noKey.json().code })).toBeGreaterThanOrEqual(1);
  });

  it('times store calls by operation', async () => {
    const text = await scrape();
    expect(sample(text, 'provisiond_store_operation_seconds_count', { operation: 'commitIssuance' })).toBe(N);
    expect(sample(text, 'provisiond_store_operation_seconds_count', { operation: 'getDevice' })).toBeGreaterThan(N);
    expect(sample(text, 'provisiond_store_operation_seconds_count', { operation: 'countDevicesByState' })).toBeGreaterThanOrEqual(1);
  });
});
