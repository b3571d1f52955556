/**
 * The provisioning use-cases, transport-agnostic: the HTTP API and the MQTT broker are thin
 * adapters that validate their transport, call one of these, and translate the result. Each
 * use-case is a short list of named steps.
 */
import { X509Certificate } from 'node:crypto';
import type { Ajv } from 'ajv';
import type { Clock } from '../clock.js';
import { isProvisiondError } from '../errors.js';
import type {
  ClaimRequest,
  ClaimResponse,
  ConfigItemStatus,
  Device,
  DeviceEvent,
  DeviceRegisterRequest,
  MqttConfigAck,
  MqttCsrAccepted,
  MqttCsrRequest,
  MqttState,
  NetworkSettings,
  SecurityPolicy,
} from '../../schemas/types.js';
import { AttemptLimiter, assertTransition } from '../policy/index.js';
import { describeErrors, getValidator, type Validator } from '../schemas.js';
import { StoreError, type DeviceRecord, type Store } from '../store/index.js';
import type { BootstrapTokens } from './bootstrap-tokens.js';
import type { ClaimCodeHasher } from './claim-codes.js';
import { buildConfigDocument, type ConfigSigner } from './config-document.js';
import { ProvisioningError } from './errors.js';
import type { Issuer } from './ports.js';

export interface ProvisioningSettings {
  tokenTtlSeconds: number;
  /** mqtts://host:port devices are told to use (known once the broker listens). */
  mqttUrl: () => string;
  defaultNetwork: NetworkSettings | undefined;
  securityPolicy: SecurityPolicy;
  maxPayloadBytes: number;
  claimMaxFailedAttempts: number;
  claimLockoutSeconds: number;
}

export interface ProvisioningDeps {
  store: Store;
  issuer: Issuer;
  clock: Clock;
  ajv: Ajv;
  codes: ClaimCodeHasher;
  tokens: BootstrapTokens;
  signer: ConfigSigner;
  settings: ProvisioningSettings;
}

/** Who asked: "apikey:<id>", "device:<id>" or "system". */
export type Actor = string;

/** What a bootstrap or operational session authenticated as. */
export interface DeviceSession {
  deviceId: string;
  kind: 'bootstrap' | 'operational';
  /** Bootstrap sessions: the credential's id. */
  jti?: string;
}

/** Outcome of a device message: an answer to publish, or a coded rejection. */
export type DeviceReply<T> = { ok: true; value: T } | { ok: false; error: ProvisioningError | (Error & { code: string }) };

const MAX_CAS_RETRIES = 8;
const MAX_SERIAL_RETRIES = 3;

/** The API view of a stored device: drops everything that must never leave the service. */
export function toDeviceView(rec: DeviceRecord): Device {
  const { claimCodeHash: _h, claimNetwork: _n, bootstrapJti: _j, revision: _r, ...view } = rec;
  return view;
}

export class ProvisioningService {
  readonly #claimLimiter: AttemptLimiter;
  readonly #validateCsr: Validator<MqttCsrRequest>;
  readonly #validateAck: Validator<MqttConfigAck>;

  constructor(private readonly deps: ProvisioningDeps) {
    const s = deps.settings;
    this.#claimLimiter = new AttemptLimiter(deps.clock, s.claimMaxFailedAttempts, s.claimLockoutSeconds);
    this.#validateCsr = getValidator(deps.ajv, 'mqtt-csr-request');
    this.#validateAck = getValidator(deps.ajv, 'mqtt-config-ack');
  }

  #now(): string {
    return this.deps.clock.now().toISOString();
  }

  #event(deviceId: string, type: DeviceEvent['type'], actor: Actor, extra: Partial<DeviceEvent> = {}): DeviceEvent {
    return { deviceId, at: this.#now(), type, actor, ...extra };
  }

  // ---------------------------------------------------------------- registry

  async registerDevice(input: DeviceRegisterRequest, actor: Actor): Promise<Device> {
    const now = this.#now();
    const record: DeviceRecord = {
      id: input.id,
      model: input.model,
      state: 'registered',
      createdAt: now,
      updatedAt: now,
      claimCodeHash: this.deps.codes.hashForRegistration(input.claimCode),
      revision: 1,
    };
    try {
      await this.deps.store.insertDevice(record, [this.#event(record.id, 'registered', actor, { to: 'registered' })]);
    } catch (err) {
      throw mapStoreError(err);
    }
    return toDeviceView(record);
  }

  async getDevice(id: string): Promise<Device> {
    return toDeviceView(await this.#load(id));
  }

  async listDevices(query: { state?: Device['state']; after?: string; limit: number }): Promise<Device[]> {
    return (await this.deps.store.listDevices(query)).map(toDeviceView);
  }

  async history(id: string): Promise<DeviceEvent[]> {
    await this.#load(id);
    return this.deps.store.listEvents(id);
  }

  async #load(id: string): Promise<DeviceRecord> {
    const rec = await this.deps.store.getDevice(id);
    if (!rec) throw new ProvisioningError('DEVICE_NOT_FOUND', `no device ${id}`);
    return rec;
  }

  // ------------------------------------------------------------------- claim

  /**
   * Claim with the label's code. A wrong code and an unknown device answer the same
   * CLAIM_CODE_INVALID; "already claimed" is only said to whoever knows the right code.
   */
  async claimDevice(input: ClaimRequest, ctx: { actor: Actor; client: string }): Promise<ClaimResponse> {
    const { store } = this.deps;
    // 1. throttle
    const verdict = this.#claimLimiter.check(ctx.client);
    if (verdict.limited) {
      throw new ProvisioningError('CLAIM_RATE_LIMITED', `too many wrong claim codes; retry in ${verdict.retryAfterSeconds} s`, {
        details: { retryAfterSeconds: verdict.retryAfterSeconds },
      });
    }
    // 2. find the device by its code
    const device = await store.findDeviceByClaimCodeHash(this.deps.codes.hash(input.claimCode));
    if (!device || (input.deviceId !== undefined && input.deviceId !== device.id)) {
      this.#claimLimiter.fail(ctx.client);
      throw new ProvisioningError('CLAIM_CODE_INVALID');
    }
    // 3. claimable?
    if (device.state !== 'registered' && device.state !== 'released') {
      throw new ProvisioningError('DEVICE_ALREADY_CLAIMED', `device ${device.id} is already claimed`);
    }
    const network = input.network;
    if (network && network.wifi.security !== 'open' && !network.wifi.secret) {
      throw new ProvisioningError('NETWORK_SECRET_REQUIRED');
    }
    // 4. credential first: an orphan token (if the bind below loses a race) authenticates nothing,
    //    because only the jti recorded on the device is accepted.
    const issued = await this.#newToken(device.id);
    // 5. bind
    assertTransition(device.state, 'claimed');
    const now = this.#now();
    const next: DeviceRecord = {
      ...device,
      state: 'claimed',
      owner: input.owner,
      site: input.site,
      claimedAt: now,
      updatedAt: now,
      bootstrapJti: issued.jti,
    };
    if (network) next.claimNetwork = network;
    else delete next.claimNetwork;
    let stored: DeviceRecord;
    try {
      stored = await store.updateDevice(next, device.revision, [
        this.#event(device.id, 'claimed', ctx.actor, { from: device.state, to: 'claimed', reason: `owner ${input.owner}, site ${input.site}` }),
      ]);
    } catch (err) {
      if (err instanceof StoreError && err.code === 'REVISION_CONFLICT') {
        throw new ProvisioningError('DEVICE_ALREADY_CLAIMED', `device ${device.id} was claimed concurrently`);
      }
      throw mapStoreError(err);
    }
    this.#claimLimiter.reset(ctx.client);
    return { device: toDeviceView(stored), bootstrap: this.#bootstrapView(device.id, issued) };
  }

  /**
   * A new bootstrap credential for a claimed device that has not bootstrapped yet (the first one
   * expired or was lost). The previous credential stops working.
   */
  async reissueBootstrap(deviceId: string, actor: Actor): Promise<ClaimResponse> {
    const { store } = this.deps;
    for (let attempt = 0; ; attempt++) {
      const device = await this.#load(deviceId);
      if (device.state !== 'claimed') {
        throw new ProvisioningError('DEVICE_STATE_INVALID', `a new bootstrap credential is only issued to a claimed device; ${deviceId} is ${device.state}`);
      }
      const issued = await this.#newToken(device.id);
      const now = this.#now();
      try {
        const stored = await store.updateDevice({ ...device, bootstrapJti: issued.jti, updatedAt: now }, device.revision, [
          this.#event(device.id, 'bootstrap_reissued', actor, { reason: 'new bootstrap credential; the previous one is void' }),
        ]);
        return { device: toDeviceView(stored), bootstrap: this.#bootstrapView(device.id, issued) };
      } catch (err) {
        if (err instanceof StoreError && err.code === 'REVISION_CONFLICT' && attempt < MAX_CAS_RETRIES) continue;
        throw mapStoreError(err);
      }
    }
  }

  async #newToken(deviceId: string) {
    const issued = await this.deps.tokens.issue(deviceId, this.deps.settings.tokenTtlSeconds);
    await this.deps.store.insertBootstrapToken({
      jti: issued.jti,
      deviceId,
      issuedAt: issued.issuedAt.toISOString(),
      expiresAt: issued.expiresAt.toISOString(),
    });
    return issued;
  }

  #bootstrapView(deviceId: string, issued: { token: string; expiresAt: Date }): ClaimResponse['bootstrap'] {
    return {
      token: issued.token,
      expiresAt: issued.expiresAt.toISOString(),
      mqttUrl: this.deps.settings.mqttUrl(),
      clientId: deviceId,
      username: deviceId,
      caCertificate: this.deps.issuer.rootPem,
    };
  }

  // ------------------------------------------------------------ broker auth

  /** CONNECT without a client certificate: username = device id, password = bootstrap token. */
  async authenticateBootstrap(clientId: string, username: string | undefined, password: string | undefined): Promise<DeviceSession> {
    if (!username || !password) throw new ProvisioningError('TOKEN_INVALID', 'bootstrap connections need username and password');
    const claims = await this.deps.tokens.verify(password);
    if (claims.deviceId !== username) throw new ProvisioningError('TOKEN_INVALID', 'the credential names another device');
    if (clientId !== claims.deviceId) throw new ProvisioningError('CLIENT_ID_MISMATCH');
    const [token, device] = await Promise.all([
      this.deps.store.getBootstrapToken(claims.jti),
      this.deps.store.getDevice(claims.deviceId),
    ]);
    if (!token || !device || token.deviceId !== device.id || device.bootstrapJti !== claims.jti) {
      throw new ProvisioningError('TOKEN_INVALID', 'the credential is not the current one of this device');
    }
    if (token.consumedAt) {
      // The one exception: a device that lost the certificate answer may come back for it with
      // the same key until its first configuration was delivered (state identity_issued).
      if (device.state !== 'identity_issued') throw new ProvisioningError('TOKEN_USED');
    } else if (device.state !== 'claimed') {
      throw new ProvisioningError('DEVICE_STATE_INVALID', `device is ${device.state}`);
    }
    return { deviceId: device.id, kind: 'bootstrap', jti: claims.jti };
  }

  /**
   * CONNECT with a client certificate (already verified against the CA chain by TLS): it must be
   * the device's current, active certificate and the client id must be its device id.
   */
  async authenticateOperational(clientId: string, certDer: Buffer): Promise<DeviceSession> {
    const x509 = new X509Certificate(certDer);
    const serial = x509.serialNumber.toLowerCase().replace(/^(00)+/, '');
    const cert = await this.deps.store.getCertificate(serial);
    if (!cert || cert.status !== 'active') throw new ProvisioningError('CERTIFICATE_UNKNOWN');
    if (Date.parse(cert.notAfter) <= this.deps.clock.now().getTime()) throw new ProvisioningError('CERTIFICATE_EXPIRED');
    if (cert.deviceId !== clientId) throw new ProvisioningError('CLIENT_ID_MISMATCH');
    const device = await this.deps.store.getDevice(cert.deviceId);
    if (!device || device.certificateSerial !== serial) throw new ProvisioningError('CERTIFICATE_UNKNOWN');
    if (!['identity_issued', 'configuring', 'provisioned', 'stalled', 'failed'].includes(device.state)) {
      throw new ProvisioningError('DEVICE_STATE_INVALID', `device is ${device.state}`);
    }
    return { deviceId: device.id, kind: 'operational' };
  }

  // --------------------------------------------------------------- identity

  /** devices/<id>/csr on a bootstrap session: verify, issue, persist (all or nothing). */
  async submitCsr(session: DeviceSession, payload: Buffer): Promise<DeviceReply<MqttCsrAccepted> & { requestId?: string }> {
    let requestId: string | undefined;
    try {
      // 1. validate (the requestId is echoed whenever it can be read, even from an invalid request)
      const data = this.#json(payload);
      const candidate = (data as { requestId?: unknown } | null)?.requestId;
      if (typeof candidate === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(candidate)) requestId = candidate;
      const req = this.#validate(data, this.#validateCsr);
      const csr = this.deps.issuer.parseCsr(req.csr);
      // 2. authorize
      const { store } = this.deps;
      const token = session.jti ? await store.getBootstrapToken(session.jti) : undefined;
      if (!token) throw new ProvisioningError('TOKEN_INVALID');
      if (token.consumedAt) {
        // Idempotent re-send for the same key; anything else is a reused credential.
        if (token.keyFingerprint !== csr.keyFingerprint || !token.certificateSerial) throw new ProvisioningError('TOKEN_USED');
        const cert = await store.getCertificate(token.certificateSerial);
        const device = await this.#load(session.deviceId);
        if (!cert || cert.status !== 'active' || device.state !== 'identity_issued') throw new ProvisioningError('TOKEN_USED');
        return { ok: true, requestId, value: this.#accepted(req.requestId, cert) };
      }
      const other = await store.findCertificateByKey(csr.keyFingerprint);
      if (other && other.deviceId !== session.deviceId) throw new ProvisioningError('KEY_IN_USE');
      // 3. issue + persist, retrying on a serial collision or a concurrent change of the device
      for (let attempt = 0; ; attempt++) {
        const device = await this.#load(session.deviceId);
        if (device.state !== 'claimed' || device.bootstrapJti !== token.jti) {
          throw new ProvisioningError('DEVICE_STATE_INVALID', `device is ${device.state}`);
        }
        assertTransition(device.state, 'identity_issued');
        const issued = this.deps.issuer.issueDevice({ deviceId: device.id, spkiDer: csr.spkiDer });
        const now = this.deps.clock.now();
        const version = 1;
        const doc = await buildConfigDocument({
          deviceId: device.id,
          version,
          issuedAt: now,
          network: device.claimNetwork ?? this.deps.settings.defaultNetwork,
          policy: this.deps.settings.securityPolicy,
          devicePublicKey: csr.publicKey,
        });
        const jws = await this.deps.signer.sign(doc);
        const next: DeviceRecord = {
          ...device,
          state: 'identity_issued',
          identityIssuedAt: now.toISOString(),
          updatedAt: now.toISOString(),
          certificateSerial: issued.serial,
          config: {
            version,
            items: doc.items.map((i): ConfigItemStatus => ({ id: i.id, required: i.required, status: 'pending' })),
          },
        };
        // The Wi-Fi secret now lives only inside the JWE addressed to the device.
        delete next.claimNetwork;
        const certificate = {
          serial: issued.serial,
          deviceId: device.id,
          keyFingerprint: csr.keyFingerprint,
          pem: issued.pem,
          notBefore: issued.notBefore.toISOString(),
          notAfter: issued.notAfter.toISOString(),
          issuedAt: now.toISOString(),
          status: 'active' as const,
        };
        try {
          await store.commitIssuance({
            device: next,
            expectedRevision: device.revision,
            events: [
              this.#event(device.id, 'identity_issued', `device:${device.id}`, {
                from: device.state,
                to: 'identity_issued',
                reason: `certificate ${issued.serial}`,
              }),
            ],
            certificate,
            consumeToken: { jti: token.jti, consumedAt: now.toISOString() },
            configDocument: { deviceId: device.id, version, jws, createdAt: now.toISOString() },
          });
          return { ok: true, requestId, value: this.#accepted(req.requestId, certificate) };
        } catch (err) {
          const code = err instanceof StoreError ? err.code : undefined;
          if (code === 'SERIAL_EXISTS' && attempt < MAX_SERIAL_RETRIES) continue;
          if (code === 'REVISION_CONFLICT' && attempt < MAX_CAS_RETRIES) continue;
          if (code === 'TOKEN_USED') {
            // A concurrent CSR with the same credential won; answer as a re-send would.
            const fresh = await store.getBootstrapToken(token.jti);
            if (fresh?.keyFingerprint === csr.keyFingerprint && fresh.certificateSerial) {
              const cert = await store.getCertificate(fresh.certificateSerial);
              if (cert) return { ok: true, requestId, value: this.#accepted(req.requestId, cert) };
            }
          }
          throw mapStoreError(err);
        }
      }
    } catch (err) {
      return { ok: false, requestId, error: asCoded(err) };
    }
  }

  #accepted(requestId: string, cert: { pem: string; serial: string; notBefore: string; notAfter: string }): MqttCsrAccepted {
    return {
      requestId,
      certificate: cert.pem,
      chain: [...this.deps.issuer.chainPems],
      serial: cert.serial,
      notBefore: cert.notBefore,
      notAfter: cert.notAfter,
    };
  }

  // ----------------------------------------------------------- configuration

  /**
   * An operational session subscribed to its config topic: the current document if any required
   * item is not yet applied (re-delivery until acknowledged). The first delivery moves the device
   * to "configuring".
   */
  async pendingConfig(deviceId: string): Promise<string | undefined> {
    for (let attempt = 0; ; attempt++) {
      const device = await this.#load(deviceId);
      const config = device.config;
      if (!config || config.items.every((i) => !i.required || i.status === 'applied')) return undefined;
      const doc = await this.deps.store.getConfigDocument(deviceId, config.version);
      if (!doc) return undefined;
      if (device.state !== 'identity_issued') return doc.jws;
      assertTransition(device.state, 'configuring');
      const now = this.#now();
      try {
        await this.deps.store.updateDevice({ ...device, state: 'configuring', updatedAt: now }, device.revision, [
          this.#event(deviceId, 'config_delivered', 'system', { from: device.state, to: 'configuring', reason: `config version ${config.version}` }),
        ]);
        return doc.jws;
      } catch (err) {
        if (err instanceof StoreError && err.code === 'REVISION_CONFLICT' && attempt < MAX_CAS_RETRIES) continue;
        throw mapStoreError(err);
      }
    }
  }

  /** devices/<id>/config/ack: record per-item outcomes; all required applied -> provisioned. */
  async acknowledge(deviceId: string, payload: Buffer): Promise<DeviceReply<MqttState>> {
    try {
      const ack = this.#parse(payload, this.#validateAck);
      for (let attempt = 0; ; attempt++) {
        const device = await this.#load(deviceId);
        const config = device.config;
        if (!config || device.state === 'identity_issued' || ack.version > config.version) {
          throw new ProvisioningError('CONFIG_VERSION_UNKNOWN', `config version ${ack.version} was never sent to this device`);
        }
        if (ack.version < config.version) {
          throw new ProvisioningError('CONFIG_VERSION_STALE', `config version ${ack.version} was superseded by ${config.version}`);
        }
        const byId = new Map(config.items.map((i) => [i.id, i]));
        for (const item of ack.items) {
          if (!byId.has(item.id)) throw new ProvisioningError('CONFIG_ITEM_UNKNOWN', `config version ${ack.version} has no item ${item.id}`);
        }
        const now = this.#now();
        let changed = false;
        const items = config.items.map((cur): ConfigItemStatus => {
          const a = ack.items.find((x) => x.id === cur.id);
          if (!a || (cur.status === a.status && cur.error === a.error)) return cur;
          changed = true;
          const next: ConfigItemStatus = { id: cur.id, required: cur.required, status: a.status, ackedAt: now };
          if (a.status === 'failed' && a.error) next.error = a.error;
          return next;
        });
        const pending = items.filter((i) => i.required && i.status !== 'applied').map((i) => i.id);
        // "provisioned" holds only while every required item stands applied: a device that reports
        // one failed after all goes back to configuring.
        const state = pending.length === 0 ? 'provisioned' : device.state === 'provisioned' ? 'configuring' : device.state;
        const reply: MqttState = { state, configVersion: config.version, pending };
        if (!changed && state === device.state) return { ok: true, value: reply };
        const events: DeviceEvent[] = [
          this.#event(deviceId, 'config_acknowledged', `device:${deviceId}`, {
            reason: ack.items.map((i) => `${i.id}=${i.status}${i.error ? ` (${i.error})` : ''}`).join(', '),
          }),
        ];
        const next: DeviceRecord = { ...device, config: { version: config.version, items }, updatedAt: now };
        if (state !== device.state) {
          assertTransition(device.state, state);
          next.state = state;
          if (state === 'provisioned') {
            next.provisionedAt = now;
            events.push(this.#event(deviceId, 'provisioned', `device:${deviceId}`, { from: device.state, to: state, reason: 'every required item applied' }));
          } else {
            events.push(
              this.#event(deviceId, 'config_acknowledged', `device:${deviceId}`, { from: device.state, to: state, reason: `required item(s) no longer applied: ${pending.join(', ')}` }),
            );
          }
        }
        try {
          await this.deps.store.updateDevice(next, device.revision, events);
          return { ok: true, value: reply };
        } catch (err) {
          if (err instanceof StoreError && err.code === 'REVISION_CONFLICT' && attempt < MAX_CAS_RETRIES) continue;
          throw mapStoreError(err);
        }
      }
    } catch (err) {
      return { ok: false, error: asCoded(err) };
    }
  }

  /** devices/<id>/telemetry: must be a JSON object within the size limit; nothing is stored yet. */
  telemetry(payload: Buffer): DeviceReply<undefined> {
    try {
      const value = this.#json(payload);
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        throw new ProvisioningError('SCHEMA_INVALID', 'telemetry must be a JSON object');
      }
      return { ok: true, value: undefined };
    } catch (err) {
      return { ok: false, error: asCoded(err) };
    }
  }

  #parse<T>(payload: Buffer, validate: Validator<T>): T {
    return this.#validate(this.#json(payload), validate);
  }

  #json(payload: Buffer): unknown {
    if (payload.length > this.deps.settings.maxPayloadBytes) {
      throw new ProvisioningError('PAYLOAD_TOO_LARGE', `payload of ${payload.length} bytes exceeds ${this.deps.settings.maxPayloadBytes}`);
    }
    try {
      return JSON.parse(payload.toString('utf8'));
    } catch {
      throw new ProvisioningError('MALFORMED_JSON');
    }
  }

  #validate<T>(data: unknown, validate: Validator<T>): T {
    if (!validate(data)) throw new ProvisioningError('SCHEMA_INVALID', describeErrors(validate.errors));
    return data;
  }
}

/** Store errors a client can cause become provisioning errors with the same code. */
function mapStoreError(err: unknown): unknown {
  if (!(err instanceof StoreError)) return err;
  switch (err.code) {
    case 'DEVICE_EXISTS':
    case 'CLAIM_CODE_IN_USE':
    case 'DEVICE_NOT_FOUND':
    case 'TOKEN_USED':
    case 'KEY_IN_USE':
      return new ProvisioningError(err.code, err.message, { cause: err });
    case 'TOKEN_NOT_FOUND':
      return new ProvisioningError('TOKEN_INVALID', undefined, { cause: err });
    case 'REVISION_CONFLICT':
    case 'SERIAL_EXISTS':
      return new ProvisioningError('ISSUANCE_CONFLICT', undefined, { cause: err });
    default:
      return err;
  }
}

function asCoded(err: unknown): Error & { code: string } {
  if (isProvisiondError(err)) return err;
  throw err;
}

