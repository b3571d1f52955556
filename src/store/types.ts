/**
 * The Store interface: everything provisiond persists. Backends (SQLite today, Redis later) implement
 * it and must pass test/contract/store.contract.ts. Domain code depends on this file only, never on a
 * database driver.
 *
 * Every operation that must not race is ONE call here, atomic inside the backend:
 * compare-and-set updates of a device (by revision), and the issuance commit (consume the bootstrap
 * token, insert the certificate with a unique serial and a key no other device holds, supersede the
 * previous certificate, update the device, append its events, store its config document).
 */
import type { ApiKey, Device, DeviceEvent, NetworkSettings } from '../../schemas/types.js';

/** A device as stored: the API view (schemas/device.json) plus what never leaves the service. */
export interface DeviceRecord extends Device {
  /** HMAC-SHA256 (service pepper) of the normalised claim code, hex. */
  claimCodeHash: string;
  /** Network settings given at claim time (may hold the Wi-Fi secret); delivered encrypted. */
  claimNetwork?: NetworkSettings;
  /** jti of the bootstrap credential issued by the current claim; only it authenticates. */
  bootstrapJti?: string;
  /** Optimistic-concurrency counter; starts at 1, +1 on every write. */
  revision: number;
}

export interface BootstrapTokenRecord {
  /** JWT id. */
  jti: string;
  deviceId: string;
  issuedAt: string;
  expiresAt: string;
  /** Set when a certificate was issued with this token. */
  consumedAt?: string;
  /** SHA-256 of the SPKI of the key certified with this token (hex); set with consumedAt. */
  keyFingerprint?: string;
  /** Serial of the certificate issued with this token; set with consumedAt. */
  certificateSerial?: string;
}

export type CertificateStatus = 'active' | 'superseded' | 'revoked';

export interface CertificateRecord {
  /** Lower-case hex, no leading zero octet, unique across the store. */
  serial: string;
  deviceId: string;
  /** SHA-256 of the certified SubjectPublicKeyInfo DER, lower-case hex. */
  keyFingerprint: string;
  pem: string;
  notBefore: string;
  notAfter: string;
  issuedAt: string;
  status: CertificateStatus;
}

export interface ConfigDocumentRecord {
  deviceId: string;
  version: number;
  /** The JWS compact serialisation published to the device. */
  jws: string;
  createdAt: string;
}

/** An API key as stored: the API view (schemas/api-key.json) without the secret, plus its hash. */
export interface ApiKeyRecord extends Omit<ApiKey, 'secret'> {
  /** SHA-256 of the key's secret part, hex. */
  secretHash: string;
}

export interface IssuanceCommit {
  /** The device as it must be after the commit (revision = expectedRevision, the store bumps it). */
  device: DeviceRecord;
  expectedRevision: number;
  events: DeviceEvent[];
  certificate: CertificateRecord;
  /** Present for bootstrap issuance: the token must exist, belong to the device and be unconsumed. */
  consumeToken?: { jti: string; consumedAt: string };
  configDocument: ConfigDocumentRecord;
}

export interface DeviceQuery {
  state?: Device['state'];
  /** Return devices whose id sorts after this one (keyset paging). */
  after?: string;
  limit: number;
}

export interface Store {
  /** Opens connections, runs migrations. */
  start(): Promise<void>;
  /** Flushes and closes. Idempotent. */
  stop(): Promise<void>;

  /** Throws StoreError DEVICE_EXISTS or CLAIM_CODE_IN_USE. Appends `events` atomically. */
  insertDevice(device: DeviceRecord, events: DeviceEvent[]): Promise<void>;
  getDevice(id: string): Promise<DeviceRecord | undefined>;
  findDeviceByClaimCodeHash(hash: string): Promise<DeviceRecord | undefined>;
  /** Ordered by id ascending. */
  listDevices(query: DeviceQuery): Promise<DeviceRecord[]>;
  countDevicesByState(): Promise<Partial<Record<Device['state'], number>>>;
  /**
   * Replaces the device if its stored revision equals `expectedRevision`, storing it with
   * revision + 1, and appends `events`, in one transaction. Returns the stored record.
   * Throws StoreError DEVICE_NOT_FOUND or REVISION_CONFLICT (nothing written).
   */
  updateDevice(device: DeviceRecord, expectedRevision: number, events: DeviceEvent[]): Promise<DeviceRecord>;
  /** Oldest first. */
  listEvents(deviceId: string): Promise<DeviceEvent[]>;

  /** Throws StoreError TOKEN_EXISTS. */
  insertBootstrapToken(token: BootstrapTokenRecord): Promise<void>;
  getBootstrapToken(jti: string): Promise<BootstrapTokenRecord | undefined>;

  /**
   * The issuance commit, all or nothing. Checks, in this order, and throws StoreError with:
   * DEVICE_NOT_FOUND / REVISION_CONFLICT (device changed meanwhile), TOKEN_NOT_FOUND / TOKEN_USED
   * (consumeToken given and token missing, of another device, or already consumed), SERIAL_EXISTS
   * (serial taken: the caller draws a new serial and retries), KEY_IN_USE (a certificate of ANOTHER
   * device has this key fingerprint). On success: the token is marked consumed (with the
   * certificate's serial and key fingerprint), the device's previous active certificates become
   * 'superseded', the new certificate is stored 'active', the config document is stored, the
   * device is stored with revision + 1 and the events appended. Returns the stored device.
   */
  commitIssuance(commit: IssuanceCommit): Promise<DeviceRecord>;
  getCertificate(serial: string): Promise<CertificateRecord | undefined>;
  /** Newest first. */
  listCertificates(deviceId: string): Promise<CertificateRecord[]>;
  /** Any certificate (of any device, any status) with this key fingerprint. */
  findCertificateByKey(keyFingerprint: string): Promise<CertificateRecord | undefined>;

  getConfigDocument(deviceId: string, version: number): Promise<ConfigDocumentRecord | undefined>;

  /** Throws StoreError API_KEY_EXISTS. */
  insertApiKey(key: ApiKeyRecord): Promise<void>;
  getApiKey(id: string): Promise<ApiKeyRecord | undefined>;
  countApiKeys(): Promise<number>;

  /** A small persistent key/value area for service secrets' metadata and flags. */
  getMeta(key: string): Promise<string | undefined>;
  setMeta(key: string, value: string): Promise<void>;
}
