/**
 * The parts every provisioning use-case shares, built once by the composition root, and the
 * config-document steps several use-cases need (build for a device, store, deliver).
 */
import { X509Certificate } from 'node:crypto';
import type { Ajv } from 'ajv';
import type { AuditTrail } from '../audit/index.js';
import type { Clock } from '../clock.js';
import type { AttemptLimiter } from '../policy/index.js';
import type { ConfigItemStatus, ConfigDocument, NetworkSettings, SecurityPolicy } from '../../schemas/types.js';
import type { ConfigDocumentRecord, DeviceRecord, ProfileRecord, Store } from '../store/index.js';
import type { BootstrapTokens } from './bootstrap-tokens.js';
import type { ClaimCodeHasher } from './claim-codes.js';
import { buildConfigDocument, type ConfigSigner, type DevicePublicKey } from './config-document.js';
import type { DeviceGateway, DeviceWriter, EventSink } from './context.js';
import { ProvisioningError } from './errors.js';
import type { Issuer } from './ports.js';
import type { Profiles } from './profiles.js';
import type { SecretBox } from './secret-box.js';

export interface ProvisioningSettings {
  tokenTtlSeconds: number;
  /** mqtts://host:port devices are told to use (known once the broker listens). */
  mqttUrl: () => string;
  defaultNetwork: NetworkSettings | undefined;
  securityPolicy: SecurityPolicy;
  maxPayloadBytes: number;
}

export interface ProvisioningCore {
  store: Store;
  writer: DeviceWriter;
  issuer: Issuer;
  clock: Clock;
  ajv: Ajv;
  codes: ClaimCodeHasher;
  tokens: BootstrapTokens;
  signer: ConfigSigner;
  box: SecretBox;
  profiles: Profiles;
  gateway: DeviceGateway;
  events: EventSink;
  /** Failed claim attempts per client and per device (shared through Redis by several instances). */
  claimLimiter: AttemptLimiter;
  /** The audit log: success entries go into the action's store transaction, refusals right after. */
  audit: AuditTrail;
  settings: ProvisioningSettings;
}

/** The site's network for a device: the claim's (secret unsealed), else the service default. */
export function deviceNetwork(core: ProvisioningCore, device: DeviceRecord): NetworkSettings | undefined {
  if (!device.network) return core.settings.defaultNetwork;
  const { settings, sealedSecret } = device.network;
  if (!sealedSecret) return settings;
  return { ...settings, wifi: { ...settings.wifi, secret: core.box.open(sealedSecret, `network:${device.id}`) } };
}

/** Seals the claim's Wi-Fi secret for storage. */
export function sealNetwork(core: ProvisioningCore, deviceId: string, network: NetworkSettings): NonNullable<DeviceRecord['network']> {
  const { secret, ...wifi } = network.wifi;
  return secret ? { settings: { ...network, wifi }, sealedSecret: core.box.seal(secret, `network:${deviceId}`) } : { settings: network };
}

export interface BuiltDocument {
  record: ConfigDocumentRecord;
  doc: ConfigDocument;
}

/** Builds and signs config document `version` of `profile` for the device's key. */
export async function buildDocument(
  core: ProvisioningCore,
  device: DeviceRecord,
  profile: ProfileRecord,
  version: number,
  devicePublicKey: DevicePublicKey,
  opts: { withoutNetwork?: boolean } = {},
): Promise<BuiltDocument> {
  const now = core.clock.now();
  const doc = await buildConfigDocument({
    deviceId: device.id,
    version,
    issuedAt: now,
    profile,
    network: opts.withoutNetwork ? undefined : deviceNetwork(core, device),
    devicePublicKey,
  });
  const jws = await core.signer.sign(doc);
  return { doc, record: { deviceId: device.id, version, jws, createdAt: now.toISOString() } };
}

/** The public key of the device's current certificate. */
export async function currentPublicKey(core: ProvisioningCore, device: DeviceRecord): Promise<DevicePublicKey> {
  const cert = device.certificateSerial ? await core.store.getCertificate(device.certificateSerial) : undefined;
  if (!cert) throw new ProvisioningError('DEVICE_STATE_INVALID', `device ${device.id} has no certificate`);
  return { publicKey: new X509Certificate(cert.pem).publicKey };
}

/**
 * Item statuses for a new document: items whose profile definition did not change keep their
 * status (when `keep` is given), the others are pending in this version.
 */
export function itemStatuses(doc: ConfigDocument, keep?: { previous: ProfileRecord | undefined; current: ProfileRecord; statuses: readonly ConfigItemStatus[] }): ConfigItemStatus[] {
  return doc.items.map((item): ConfigItemStatus => {
    const fresh: ConfigItemStatus = { id: item.id, type: item.type, required: item.required, priority: item.priority, await: item.await, status: 'pending', version: doc.version };
    if (!keep?.previous) return fresh;
    const before = keep.previous.items.find((i) => i.id === item.id);
    const after = keep.current.items.find((i) => i.id === item.id);
    const old = keep.statuses.find((s) => s.id === item.id);
    if (!before || !after || !old || JSON.stringify(before) !== JSON.stringify(after)) return fresh;
    return { ...old, type: item.type, required: item.required, priority: item.priority, await: item.await };
  });
}

/** Required items that are not applied. */
export function pendingRequired(items: readonly ConfigItemStatus[]): string[] {
  return items.filter((i) => i.required && i.status !== 'applied').map((i) => i.id);
}
