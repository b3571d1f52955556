/**
 * Factories for valid store records (per schemas/types.ts and src/store/types.ts).
 * Every call returns a fresh, unique record (ids, serials, hashes); pass overrides for what a test
 * cares about. Optional properties are omitted unless overridden, so records round-trip exactly.
 */
import { createHash, randomBytes } from 'node:crypto';
import type {
  ApiKeyRecord,
  BootstrapTokenRecord,
  CertificateRecord,
  ConfigDocumentRecord,
  DeviceRecord,
  IssuanceCommit,
  ProfileRecord,
  TenantRecord,
} from '../../src/store/types.js';
import type { AuditEntry, DeviceEvent, ProfileItem } from '../../schemas/types.js';

/** The tenant records belong to unless a test says otherwise (the service tenant). */
export const DEFAULT_TENANT = 'default';

/** Fixed base instant so that tests are reproducible; offsets keep timestamps ordered. */
export const BASE_TIME_MS = Date.UTC(2025, 0, 15, 12, 0, 0);

/** An RFC 3339 UTC timestamp `offsetMs` after BASE_TIME_MS. */
export function ts(offsetMs = 0): string {
  return new Date(BASE_TIME_MS + offsetMs).toISOString();
}

let counter = 0;
/** A short string unique within the test process (letters, digits and '-': valid in a DeviceId). */
export function uniqueId(prefix: string): string {
  counter += 1;
  return `${prefix}-${counter.toString(36)}-${randomBytes(3).toString('hex')}`;
}

export function hex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

/** A claim code hash as the service stores it: 64 lower-case hex characters. */
export function claimCodeHash(claimCode: string = uniqueId('code')): string {
  return createHash('sha256').update(claimCode).digest('hex');
}

/** A certificate serial: lower-case hex, positive, no leading zero octet (16 octets). */
export function certificateSerial(): string {
  const b = randomBytes(16);
  b[0] = ((b[0] ?? 0) & 0x7f) | 0x10;
  return b.toString('hex');
}

/** A SubjectPublicKeyInfo fingerprint: SHA-256, lower-case hex. */
export function keyFingerprint(): string {
  return createHash('sha256').update(randomBytes(32)).digest('hex');
}

export function makeDevice(overrides: Partial<DeviceRecord> = {}): DeviceRecord {
  return {
    id: uniqueId('dev'),
    model: 'thermostat',
    state: 'registered',
    createdAt: ts(),
    updatedAt: ts(),
    tenantId: DEFAULT_TENANT,
    claimCodeHash: claimCodeHash(),
    revision: 1,
    ...overrides,
  };
}

/** A claimed device carrying the claim-time optional fields, nested objects included (round-trip tests). */
export function makeClaimedDevice(overrides: Partial<DeviceRecord> = {}): DeviceRecord {
  return makeDevice({
    state: 'claimed',
    owner: 'Acme Facilities',
    site: 'Building 7 / Floor 2',
    claimedAt: ts(1000),
    updatedAt: ts(1000),
    profileId: 'lobby-camera',
    profileVersion: 2,
    deadlineAt: ts(1000 + 86_400_000),
    provisionalUntil: ts(1000 + 7 * 86_400_000),
    network: {
      settings: {
        wifi: { ssid: 'acme-iot', security: 'wpa2-psk', hidden: false },
        ipv4: { mode: 'static', address: '10.0.7.20', prefixLength: 24, gateway: '10.0.7.1' },
        dns: ['10.0.7.1', '1.1.1.1'],
        ntp: ['pool.ntp.org'],
      },
      sealedSecret: `v1.${randomBytes(12).toString('base64url')}.${randomBytes(40).toString('base64url')}`,
    },
    ...overrides,
  });
}

export function makeEvent(deviceId: string, overrides: Partial<DeviceEvent> = {}): DeviceEvent {
  return {
    deviceId,
    at: ts(),
    type: 'registered',
    actor: 'system',
    ...overrides,
  };
}

export function makeBootstrapToken(deviceId: string, overrides: Partial<BootstrapTokenRecord> = {}): BootstrapTokenRecord {
  return {
    jti: uniqueId('jti'),
    deviceId,
    issuedAt: ts(1000),
    expiresAt: ts(1000 + 15 * 60_000),
    ...overrides,
  };
}

export function makeCertificate(deviceId: string, overrides: Partial<CertificateRecord> = {}): CertificateRecord {
  const body = randomBytes(96).toString('base64');
  return {
    serial: certificateSerial(),
    deviceId,
    keyFingerprint: keyFingerprint(),
    pem: `-----BEGIN CERTIFICATE-----\n${body.slice(0, 64)}\n${body.slice(64)}\n-----END CERTIFICATE-----\n`,
    notBefore: ts(2000),
    notAfter: ts(2000 + 365 * 86_400_000),
    issuedAt: ts(2000),
    status: 'active',
    ...overrides,
  };
}

export function makeConfigDocument(
  deviceId: string,
  version = 1,
  overrides: Partial<ConfigDocumentRecord> = {},
): ConfigDocumentRecord {
  const b64url = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const jws = [
    b64url({ alg: 'ES256', x5c: ['MIIB...'] }),
    b64url({ deviceId, version, issuedAt: ts(2000), items: [] }),
    randomBytes(64).toString('base64url'),
  ].join('.');
  return { deviceId, version, jws, createdAt: ts(2000), ...overrides };
}

export function makeApiKey(overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return {
    id: uniqueId('key'),
    name: 'ci key',
    role: 'admin',
    createdAt: ts(),
    tenantId: DEFAULT_TENANT,
    secretHash: hex(32),
    ...overrides,
  };
}

/** A tenant id: matches ^[a-z0-9][a-z0-9-]{0,62}$. */
/** An audit entry (success of a claim by an API key, unless overridden). */
export function makeAudit(overrides: Partial<AuditEntry> = {}): AuditEntry {
  return {
    id: hex(16),
    at: ts(1000),
    tenantId: DEFAULT_TENANT,
    actor: `apikey:${hex(8)}`,
    action: 'device.claim',
    outcome: 'success',
    ...overrides,
  };
}

export function tenantId(): string {
  return uniqueId('tenant');
}

export function makeTenant(overrides: Partial<TenantRecord> = {}): TenantRecord {
  return {
    id: tenantId(),
    name: 'Acme Facilities',
    provisionalWindowDays: 14,
    createdAt: ts(),
    ...overrides,
  };
}

/** The items of a typical profile: network (awaited) and security policy, both required. */
export function profileItems(): ProfileItem[] {
  return [
    {
      id: 'network',
      type: 'network',
      required: true,
      priority: 0,
      await: true,
      data: { wifi: { ssid: 'acme-iot', security: 'wpa2-psk', hidden: false }, ipv4: { mode: 'dhcp' } },
    },
    {
      id: 'security-policy',
      type: 'security-policy',
      required: true,
      priority: 10,
      await: false,
      data: { minTlsVersion: '1.3', telemetryIntervalSeconds: 60, allowedTopics: [], firmwareFloor: '1.0.0' },
    },
  ];
}

/** Version 1 of a new profile of the default tenant unless overridden (ids match the ProfileId pattern). */
export function makeProfile(overrides: Partial<ProfileRecord> = {}): ProfileRecord {
  return {
    id: uniqueId('profile'),
    tenantId: DEFAULT_TENANT,
    version: 1,
    name: 'Lobby camera',
    deadlineSeconds: 86_400,
    reprovision: 'keep',
    allowExpiredRenewal: false,
    items: profileItems(),
    createdAt: ts(),
    ...overrides,
  };
}

/**
 * A valid issuance commit for `device` as currently stored (expectedRevision = device.revision):
 * moves it to identity_issued with a fresh certificate and config document version 1 (or the next
 * one after device.config.version). Pass `token` to consume a bootstrap token; `renewal: true` for
 * a renewal (no config document, config unchanged, a 'certificate_renewed' event).
 */
export function makeIssuanceCommit(
  device: DeviceRecord,
  opts: {
    token?: BootstrapTokenRecord;
    certificate?: Partial<CertificateRecord>;
    at?: string;
    renewal?: boolean;
    previousCertificates?: IssuanceCommit['previousCertificates'];
  } = {},
): IssuanceCommit {
  const at = opts.at ?? ts(3000);
  const certificate = makeCertificate(device.id, { issuedAt: at, notBefore: at, ...opts.certificate });
  if (opts.renewal === true) {
    const commit: IssuanceCommit = {
      device: { ...device, updatedAt: at, certificateSerial: certificate.serial, certificateNotAfter: certificate.notAfter },
      expectedRevision: device.revision,
      events: [makeEvent(device.id, { at, type: 'certificate_renewed', actor: `device:${device.id}` })],
      certificate,
    };
    if (opts.token !== undefined) commit.consumeToken = { jti: opts.token.jti, consumedAt: at };
    if (opts.previousCertificates !== undefined) commit.previousCertificates = opts.previousCertificates;
    return commit;
  }
  const version = (device.config?.version ?? 0) + 1;
  const configDocument = makeConfigDocument(device.id, version, { createdAt: at });
  const commit: IssuanceCommit = {
    device: {
      ...device,
      state: 'identity_issued',
      updatedAt: at,
      identityIssuedAt: at,
      certificateSerial: certificate.serial,
      config: { version, items: [{ id: 'network', required: true, status: 'pending' }] },
    },
    expectedRevision: device.revision,
    events: [
      makeEvent(device.id, {
        at,
        type: 'identity_issued',
        from: device.state,
        to: 'identity_issued',
        actor: `device:${device.id}`,
      }),
      makeEvent(device.id, { at, type: 'config_delivered', actor: 'system' }),
    ],
    certificate,
    configDocument,
  };
  if (opts.token !== undefined) commit.consumeToken = { jti: opts.token.jti, consumedAt: at };
  if (opts.previousCertificates !== undefined) commit.previousCertificates = opts.previousCertificates;
  return commit;
}
