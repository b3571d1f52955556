/**
 * A simulated smart-home hub: itself a provisioned device (firmware-sim/device.ts), which claims
 * devices it discovers for its owner and relays their whole provisioning over its own mutual-TLS
 * connection (the children may have no route to the service):
 *   devices/<hub>/hub/claim                      -> .../hub/claim/accepted | rejected
 *   devices/<hub>/children/<child>/csr            -> .../csr/accepted | rejected
 *   devices/<hub>/children/<child>/config         <- the child's signed configuration
 *   devices/<hub>/children/<child>/config/ack     -> .../state | errors
 * The child's key never leaves the child: here the child object makes it and decrypts its own
 * Wi-Fi secret; the hub only carries messages.
 */
import { randomBytes, X509Certificate, type KeyObject } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import type { MqttCsrAccepted, MqttError, MqttHubClaimed, MqttState } from '../schemas/types.js';
import { SimDevice, makeKeyAndCsr, type SimDeviceOptions } from './device.js';
import { MODELS, type ModelName } from './models.js';
import { DeviceProtocolError, decryptSecret, openConfigDocument, verifyChain } from './protocol.js';

export interface ChildDevice {
  deviceId: string;
  model: ModelName;
  /** The code from the child's label (or its QR code). */
  claimCode: string;
}

/** Where the time of one onboarding went (ms), as seen by the hub. */
export interface ChildTimings {
  /** hub/claim published to hub/claim/accepted. */
  claimMs: number;
  /** The child's key and CSR made and relayed, to its certificate received and checked. */
  identityMs: number;
  /** Subscription to the child's config to state "provisioned" (verify, apply, acknowledge). */
  configMs: number;
  totalMs: number;
}

export class SimHub extends SimDevice {
  readonly #root: X509Certificate;

  constructor(opts: Omit<SimDeviceOptions, 'model'>) {
    super({ ...opts, model: 'hub' });
    this.#root = new X509Certificate((opts.bootstrap ?? opts.broker)!.caCertificate);
  }

  /** Claims a discovered child and provisions it through this hub. Resolves when it is provisioned. */
  async onboard(child: ChildDevice, timeoutMs = 15_000): Promise<{ certificatePem: string; timings: ChildTimings }> {
    const client = this.client;
    if (!client) throw new DeviceProtocolError('NOT_CONNECTED', 'the hub must be provisioned and connected');
    const hub = this.deviceId;
    const t = (leaf: string) => `devices/${hub}/${leaf}`;
    const c = (leaf: string) => `devices/${hub}/children/${child.deviceId}/${leaf}`;

    // 1. claim it for the hub's owner
    const t0 = performance.now();
    await client.subscribeAsync([t('hub/claim/accepted'), t('hub/claim/rejected')], { qos: 1 });
    const requestId = randomBytes(6).toString('hex');
    const claimed = next(client, [t('hub/claim/accepted'), t('hub/claim/rejected')], timeoutMs);
    await client.publishAsync(t('hub/claim'), JSON.stringify({ requestId, claimCode: child.claimCode, deviceId: child.deviceId }), { qos: 1 });
    const claim = await claimed;
    if (claim.topic.endsWith('rejected')) throw rejection(claim.payload);
    if ((JSON.parse(claim.payload) as MqttHubClaimed).deviceId !== child.deviceId) throw new DeviceProtocolError('UNEXPECTED_ANSWER', 'claimed another device');

    // 2. the child makes its key and CSR; the hub relays them
    const t1 = performance.now();
    const keys = await makeKeyAndCsr(child.deviceId);
    await client.subscribeAsync([c('csr/accepted'), c('csr/rejected'), c('state'), c('errors')], { qos: 1 });
    const issued = next(client, [c('csr/accepted'), c('csr/rejected')], timeoutMs);
    await client.publishAsync(c('csr'), JSON.stringify({ requestId, csr: keys.csrPem }), { qos: 1 });
    const answer = await issued;
    if (answer.topic.endsWith('rejected')) throw rejection(answer.payload);
    const accepted = JSON.parse(answer.payload) as MqttCsrAccepted;
    const leaf = new X509Certificate(accepted.certificate);
    verifyChain([leaf, ...accepted.chain.map((p) => new X509Certificate(p))], this.#root);
    if (!leaf.checkPrivateKey(keys.privateKey)) throw new DeviceProtocolError('CERT_KEY_MISMATCH', 'certificate is not for the child key');

    // 3. the child's configuration, checked and applied by the child, acknowledged through the hub
    const t2 = performance.now();
    const provisioned = next(client, [c('state'), c('errors')], timeoutMs, (topic, payload) => topic.endsWith('errors') || (JSON.parse(payload) as MqttState).state === 'provisioned');
    const config = next(client, [c('config')], timeoutMs);
    await client.subscribeAsync(c('config'), { qos: 1 });
    const jws = (await config).payload;
    const ack = await applyAsChild(jws, this.#root, child, keys.privateKey);
    await client.publishAsync(c('config/ack'), JSON.stringify(ack), { qos: 1 });
    const done = await provisioned;
    if (done.topic.endsWith('errors')) throw rejection(done.payload);
    const t3 = performance.now();
    return { certificatePem: accepted.certificate, timings: { claimMs: t1 - t0, identityMs: t2 - t1, configMs: t3 - t2, totalMs: t3 - t0 } };
  }
}

async function applyAsChild(jws: string, root: X509Certificate, child: ChildDevice, key: KeyObject) {
  const doc = await openConfigDocument(jws, root, child.deviceId);
  const items = [];
  for (const item of doc.items) {
    try {
      const secret = item.type === 'network' && item.data.wifi.secretJwe ? await decryptSecret(item.data.wifi.secretJwe, key) : undefined;
      MODELS[child.model].apply(item, secret);
      items.push({ id: item.id, status: 'applied' as const });
    } catch (err) {
      items.push({ id: item.id, status: 'failed' as const, error: (err as Error).message.slice(0, 200) });
    }
  }
  return { version: doc.version, items };
}

function rejection(payload: string): DeviceProtocolError {
  const err = JSON.parse(payload) as MqttError;
  return new DeviceProtocolError(err.code, err.message);
}

/** The next message on one of `topics` (that `accept` takes), or a timeout. */
function next(
  client: MqttClient,
  topics: string[],
  timeoutMs: number,
  accept: (topic: string, payload: string) => boolean = () => true,
): Promise<{ topic: string; payload: string }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off('message', on);
      reject(new DeviceProtocolError('TIMEOUT', `no answer on ${topics.join(', ')}`));
    }, timeoutMs);
    const on = (topic: string, buf: Buffer) => {
      const payload = buf.toString('utf8');
      if (!topics.includes(topic) || !accept(topic, payload)) return;
      clearTimeout(timer);
      client.off('message', on);
      resolve({ topic, payload });
    };
    client.on('message', on);
  });
}
