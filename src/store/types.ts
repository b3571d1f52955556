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
import type { ApiKey, AuditAction, AuditEntry, AuditOutcome, Device, DeviceEvent, DeviceState, NetworkSettings, Profile, Tenant } from '../../schemas/types.js';

/** A device as stored: the API view (schemas/device.json) plus what never leaves the service. */
export interface DeviceRecord extends Device {
  /** HMAC-SHA256 (service pepper) of the normalised claim code, hex. */
  claimCodeHash: string;
  /**
   * The site's network from the claim: settings without the Wi-Fi secret, which is kept sealed
   * (AES-256-GCM, data-directory key) to be encrypted to the device's current key in every
   * config document.
   */
  network?: { settings: NetworkSettings; sealedSecret?: string };
  /** jti of the bootstrap credential issued by the current claim; only it authenticates. */
  bootstrapJti?: string;
  /** Highest config document version ever stored for the device (numbering survives release). */
  lastConfigVersion?: number;
  /**
   * After a renewal, the certificate it replaced: still accepted (and able to fetch the new one
   * again) until the new certificate is first used, then revoked as superseded.
   */
  previousCertificateSerial?: string;
  /** Zero-touch: the birth certificate serial the device enrolled with (it cannot enrol twice). */
  enrolledWithBirthSerial?: string;
  /** Set when the current certificate was first used to connect. */
  certificateConfirmedAt?: string;
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

/** A tenant as stored (schemas/tenant.json; the webhook secret is kept, never shown). */
export type TenantRecord = Tenant;

/** One version of a provisioning profile (schemas/profile.json). Versions are immutable. */
export type ProfileRecord = Profile;

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
  /** Set when status becomes 'revoked'. */
  revokedAt?: string;
  /** RFC 5280 CRLReason name: 'unspecified' | 'keyCompromise' | 'affiliationChanged' | 'superseded' | 'cessationOfOperation'. */
  revocationReason?: string;
}

/** A change of a certificate's status, applied in the same transaction as a device update. */
export interface CertificateStatusChange {
  serial: string;
  status: 'superseded' | 'revoked';
  revokedAt?: string;
  revocationReason?: string;
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
  /** Absent for a renewal (the configuration does not change). */
  configDocument?: ConfigDocumentRecord;
  /**
   * What happens to the device's other active certificates: 'superseded' (renewal, default) or
   * 'revoked' (re-provisioning after a factory reset: the old key is presumed gone).
   */
  previousCertificates?: { status: 'superseded' } | { status: 'revoked'; revokedAt: string; revocationReason: string };
  /** Audit entries of the issuance, appended in the same transaction (nothing when the commit fails). */
  audit?: AuditEntry[];
}

/** Extra writes that go in the same transaction as a device update. */
export interface DeviceUpdateExtras {
  certificates?: CertificateStatusChange[];
  /** A new config document; (deviceId, version) must not exist yet (CONFIG_VERSION_EXISTS). */
  configDocument?: ConfigDocumentRecord;
  /** Audit entries of the change, appended in the same transaction (nothing when the update fails). */
  audit?: AuditEntry[];
}

/** listAudit filters (all optional, joined with AND) and paging. Entries come newest first. */
export interface AuditQuery {
  tenantId?: string;
  deviceId?: string;
  action?: AuditAction;
  outcome?: AuditOutcome;
  /** at >= since (ISO 8601, same format as stored). */
  since?: string;
  /** at < until. */
  until?: string;
  /** A page's `next`: only entries appended before the one it names. */
  before?: string;
  limit: number;
}

export interface AuditPage {
  /** Newest (last appended) first. */
  entries: AuditEntry[];
  /** Set when the page is full: pass it as `before` for the next (older) page. Opaque, backend-specific. */
  next?: string;
}

export interface DeviceQuery {
  /** Only this tenant's devices. Every API-facing query sets it. */
  tenantId?: string;
  state?: DeviceState;
  /** Any of these states. */
  states?: readonly DeviceState[];
  profileId?: string;
  /** deadlineAt strictly before this instant (ISO 8601, same format as stored). */
  deadlineBefore?: string;
  /** provisionalUntil strictly before this instant. */
  provisionalBefore?: string;
  /** Return devices whose id sorts after this one (keyset paging). */
  after?: string;
  limit: number;
}

/**
 * One unit of a whole-store export (exportEntries) and import (importEntries), for moving a store
 * between backends (src/store/copy.ts). Records are exactly as stored (same revisions, statuses,
 * timestamps). A device entry carries everything that belongs to the device.
 */
export type StoreEntry =
  | { kind: 'tenant'; tenant: TenantRecord }
  | { kind: 'profileVersion'; profile: ProfileRecord }
  | { kind: 'apiKey'; apiKey: ApiKeyRecord }
  | { kind: 'meta'; key: string; value: string }
  | DeviceEntry
  | { kind: 'audit'; entry: AuditEntry };

export interface DeviceEntry {
  kind: 'device';
  device: DeviceRecord;
  /** Oldest first (as listEvents). */
  events: DeviceEvent[];
  /** In the order they were stored (oldest first; listCertificates orders newest first from it). */
  certificates: CertificateRecord[];
  /** By version, ascending. */
  configDocuments: ConfigDocumentRecord[];
  /** By jti (byte order). */
  bootstrapTokens: BootstrapTokenRecord[];
}

/** How many records of each kind a store holds (countEntries). */
export interface StoreCounts {
  tenants: number;
  profileVersions: number;
  apiKeys: number;
  meta: number;
  devices: number;
  events: number;
  certificates: number;
  configDocuments: number;
  bootstrapTokens: number;
  auditEntries: number;
}

export interface Store {
  /** Opens connections, runs migrations. */
  start(): Promise<void>;
  /** Flushes and closes. Idempotent. */
  stop(): Promise<void>;
  /**
   * A cheap round trip to the backend (GET /readyz): resolves when the store answers now, throws
   * StoreError STORE_UNAVAILABLE when it is not started or does not answer.
   */
  ping(): Promise<void>;

  /** Throws StoreError DEVICE_EXISTS or CLAIM_CODE_IN_USE. Appends `events` atomically. */
  insertDevice(device: DeviceRecord, events: DeviceEvent[]): Promise<void>;
  /**
   * Many devices at once, all or nothing: the first one whose id or claim-code hash exists makes
   * the whole batch fail with DEVICE_EXISTS / CLAIM_CODE_IN_USE (details.id names it).
   */
  insertDevices(devices: readonly DeviceRecord[], events: DeviceEvent[]): Promise<void>;
  getDevice(id: string): Promise<DeviceRecord | undefined>;
  findDeviceByClaimCodeHash(hash: string): Promise<DeviceRecord | undefined>;
  /** Ordered by id ascending. */
  listDevices(query: DeviceQuery): Promise<DeviceRecord[]>;
  /** Counts per state, of one tenant when given. */
  countDevicesByState(tenantId?: string): Promise<Partial<Record<DeviceState, number>>>;
  /**
   * Replaces the device if its stored revision equals `expectedRevision`, storing it with
   * revision + 1, and appends `events`, in one transaction. Returns the stored record.
   * Throws StoreError DEVICE_NOT_FOUND or REVISION_CONFLICT (nothing written). `extras` are
   * written in the same transaction: certificate status changes (CERTIFICATE_NOT_FOUND when a
   * serial is unknown or belongs to another device) and a new config document
   * (CONFIG_VERSION_EXISTS when that version exists).
   */
  updateDevice(device: DeviceRecord, expectedRevision: number, events: DeviceEvent[], extras?: DeviceUpdateExtras): Promise<DeviceRecord>;
  /** Oldest first. */
  listEvents(deviceId: string): Promise<DeviceEvent[]>;

  /** Throws StoreError TOKEN_EXISTS. */
  insertBootstrapToken(token: BootstrapTokenRecord): Promise<void>;
  getBootstrapToken(jti: string): Promise<BootstrapTokenRecord | undefined>;
  /**
   * Deletes up to `limit` tokens that were never consumed and whose expiresAt is strictly before
   * `before` (ISO 8601, same format as stored), earliest expiry first, and returns them. Consumed
   * tokens are never deleted. Atomic per token: two callers never both get the same token.
   */
  deleteExpiredBootstrapTokens(before: string, limit: number): Promise<BootstrapTokenRecord[]>;

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
  /** Any certificate (of any device, any status) with this key fingerprint; the newest when several. */
  findCertificateByKey(keyFingerprint: string): Promise<CertificateRecord | undefined>;
  /** Every revoked certificate whose notAfter is after `notAfterAfter` (for the CRL), oldest revocation first. */
  listRevokedCertificates(notAfterAfter: string): Promise<CertificateRecord[]>;

  getConfigDocument(deviceId: string, version: number): Promise<ConfigDocumentRecord | undefined>;

  /** Throws StoreError TENANT_EXISTS. */
  insertTenant(tenant: TenantRecord): Promise<void>;
  getTenant(id: string): Promise<TenantRecord | undefined>;
  /** Replaces it; throws TENANT_NOT_FOUND. */
  updateTenant(tenant: TenantRecord): Promise<void>;
  /** Ordered by id. */
  listTenants(): Promise<TenantRecord[]>;

  /**
   * Stores one profile version. Versions of one (tenantId, id) start at 1 and go up by one:
   * throws PROFILE_VERSION_EXISTS when that version exists (a concurrent change won: re-read and
   * retry) and PROFILE_VERSION_GAP when version - 1 does not exist.
   */
  insertProfileVersion(profile: ProfileRecord): Promise<void>;
  /** The given version, or the latest when omitted. */
  getProfile(tenantId: string, id: string, version?: number): Promise<ProfileRecord | undefined>;
  /** The latest version of each of the tenant's profiles, ordered by id. */
  listProfiles(tenantId: string): Promise<ProfileRecord[]>;

  /** Throws StoreError API_KEY_EXISTS. `audit` entries are appended in the same transaction. */
  insertApiKey(key: ApiKeyRecord, audit?: readonly AuditEntry[]): Promise<void>;
  getApiKey(id: string): Promise<ApiKeyRecord | undefined>;
  countApiKeys(): Promise<number>;
  /** Ordered by id. */
  listApiKeys(tenantId: string): Promise<ApiKeyRecord[]>;
  /** Removes it; returns whether it existed. `audit` entries are appended with the removal (not when nothing was removed). */
  deleteApiKey(id: string, audit?: readonly AuditEntry[]): Promise<boolean>;

  /**
   * The audit log: append-only (there is no way to change or remove an entry through the store;
   * SQLite refuses UPDATE and DELETE with triggers, Redis keeps a stream that is only appended
   * to). Appends the entries in order, atomically.
   */
  appendAudit(entries: readonly AuditEntry[]): Promise<void>;
  /** Entries matching `query`, newest first, a page at a time. */
  listAudit(query: AuditQuery): Promise<AuditPage>;

  /** A small persistent key/value area for service secrets' metadata and flags. */
  getMeta(key: string): Promise<string | undefined>;
  setMeta(key: string, value: string): Promise<void>;
  /**
   * Stores `value` unless the key has one, atomically (several instances starting at once: the
   * first wins). Returns the value stored afterwards: `value`, or the one that was there.
   */
  setMetaIfAbsent(key: string, value: string): Promise<string>;

  /**
   * Every record of the store, in an order that depends only on the data (the same for every
   * backend): tenants by id; profile versions (all of them) by tenant, id and version; API keys by
   * id; meta by key; then devices by id (byte order), each with its events, certificates, config
   * documents and bootstrap tokens; then audit entries in the order they were appended. Devices are read in pages, so a large store is never held in
   * memory at once; each page is a consistent view, the whole export is not (stop writers first).
   */
  exportEntries(): AsyncIterable<StoreEntry>;
  /**
   * Writes exported entries verbatim (same revisions, statuses, timestamps; every index the
   * backend keeps), all or nothing: a record that exists already (or appears twice in the batch)
   * makes the whole batch fail with IMPORT_CONFLICT (details.kind and details.id name it).
   * Profile versions are stored as given (no PROFILE_VERSION_GAP check): import them in order.
   */
  importEntries(entries: readonly StoreEntry[]): Promise<void>;
  /** How many records of each kind the store holds. */
  countEntries(): Promise<StoreCounts>;
}
