/**
 * A held fleet across a broker restart: devices with factory identities hold their operational
 * sessions (mutual TLS), the service stops and starts again on the same port and data directory,
 * and every device comes back by itself and is reachable again. The figures (memory, time to
 * reconnect 10,000) are bench/hold.ts's; this only checks the behaviour.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, expect, it } from 'vitest';
import { makeKeyAndCsr } from '../../firmware-sim/index.js';
import type { ClaimResponse, DeviceImportResult, FactoryIssueResult } from '../../schemas/types.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { waitUntil } from '../helpers/wait.js';

const DEVICES = 300;
const auth = (key: string) => ({ authorization: `Bearer ${key}` });

let dataDir = '';
let ts: TestService | undefined;
const clients: MqttClient[] = [];
afterAll(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)));
  await ts?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

it(`${DEVICES} held devices reconnect by themselves after a broker restart and are reachable again`, { timeout: 90_000 }, async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'provisiond-held-'));
  ts = await startTestService({}, { dataDir });
  const first = ts;

  // fully pre-provisioned at the factory, claimed without a network: provisioned, holding a session
  const ids = Array.from({ length: DEVICES }, (_, i) => `held-${i}`);
  const imported = (await first.running.api.inject({ method: 'POST', url: '/v1/devices/import', headers: auth(first.keys.factory), payload: { devices: ids.map((id) => ({ id, model: 'thermostat' })) } })).json() as DeviceImportResult;
  expect(imported.created).toBe(DEVICES);
  const made = await Promise.all(ids.map((id) => makeKeyAndCsr(id)));
  const issued = (await first.running.api.inject({
    method: 'POST',
    url: '/v1/factory/certificates',
    headers: auth(first.keys.factory),
    payload: { baseline: true, devices: ids.map((deviceId, i) => ({ deviceId, csr: made[i]!.csrPem })) },
  })).json() as FactoryIssueResult;
  expect(issued.issued).toBe(DEVICES);
  for (const row of imported.rows) {
    const claim = await first.running.api.inject({ method: 'POST', url: '/v1/claims', headers: auth(first.keys.installer), payload: { claimCode: row.claimCode, owner: 'o', site: 's' } });
    expect((claim.json() as ClaimResponse).device.state).toBe('provisioned');
  }

  // each device subscribes after every CONNACK, as firmware does; mqtt.js reconnects it
  const port = first.running.mqttPort;
  const subscribed = new Map<string, number>(); // device -> sessions subscribed so far
  const received = new Map<string, string>();
  ids.forEach((id, i) => {
    const client = mqtt.connect(`mqtts://127.0.0.1:${port}`, {
      clientId: id,
      key: made[i]!.keyPem,
      cert: issued.results[i]!.certificate! + issued.chain[0],
      ca: issued.chain.at(-1),
      protocolVersion: 4,
      clean: true,
      keepalive: 60,
      resubscribe: false,
      reconnectPeriod: 500 + Math.floor(Math.random() * 500),
      connectTimeout: 15_000,
    });
    client.on('error', () => undefined); // refused while the broker is down; the client retries
    client.on('connect', () => {
      const topics = ['state', 'errors', 'commands', 'config'].map((leaf) => `devices/${id}/${leaf}`);
      client.subscribe(topics, { qos: 1 }, (err, granted) => {
        if (!err && granted?.every((g) => g.qos === 1)) subscribed.set(id, (subscribed.get(id) ?? 0) + 1);
      });
    });
    client.on('message', (topic, payload) => received.set(topic, payload.toString()));
    clients.push(client);
  });
  await waitUntil(() => subscribed.size === DEVICES, 'every device is connected and subscribed', 60_000);
  expect(first.running.broker.connectedClients).toBe(DEVICES);

  // restart: same port, same data directory (CA, store)
  await first.stop();
  await waitUntil(() => clients.every((c) => !c.connected), 'every device saw its connection close', 10_000);
  ts = await startTestService({ mqtt: { port } }, { dataDir });
  const second = ts;
  await waitUntil(() => ids.every((id) => subscribed.get(id) === 2), 'every device is back and subscribed again', 60_000);
  expect(second.running.broker.connectedClients).toBe(DEVICES);

  // the new broker reaches every device on its session
  await Promise.all(ids.map((id) => second.running.broker.publish(`devices/${id}/commands`, JSON.stringify({ command: 'ping', id }))));
  await waitUntil(() => ids.every((id) => received.has(`devices/${id}/commands`)), 'every device received the message', 30_000);
  expect(JSON.parse(received.get('devices/held-7/commands')!)).toEqual({ command: 'ping', id: 'held-7' });
});
