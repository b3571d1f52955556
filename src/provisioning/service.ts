/**
 * The device-facing provisioning use-cases, transport-agnostic: registry, claim, bootstrap and
 * operational authentication, certificate issuance and renewal, configuration delivery and
 * acknowledgement. The HTTP API and the MQTT broker are thin adapters around these. Operator
 * actions on the lifecycle (release, revoke, ...) are in lifecycle.ts.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
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
  MqttHubClaim,
  MqttHubClaimed,
  MqttState,
} from '../../schemas/types.js';
import { ACTIVE_STATES, SERVICE_TENANT, assertTransition } from '../policy/index.js';
import { describeErrors, getValidator, type Validator } from '../schemas.js';
import { StoreError, type CertificateRecord, type DeviceRecord } from '../store/index.js';
import { asCoded, auditFailures, mapStoreError, type TenantContext } from './context.js';
import { buildDocument, currentPublicKey, deviceNetwork, itemStatuses, pendingRequired, sealNetwork, type ProvisioningCore } from './core.js';
import { ProvisioningError } from './errors.js';
import type { IssuedCert } from './ports.js';
import { askPreprovisionWebhook } from './preprovision.js';

/** What a bootstrap, operational or renewal-only session authenticated as. */
export interface DeviceSession {
  deviceId: string;
  kind: 'bootstrap' | 'operational' | 'renewal' | 'birth';
  /** Bootstrap sessions: the credential's id. */
  jti?: string;
  /** Operational and renewal sessions: the serial of the certificate presented. */
  certificateSerial?: string;
  /** Operational sessions of a hub device: it may claim and relay for its children. */
  hub?: boolean;
  /** A child's CSR relayed by this hub (no bootstrap connection of the child). */
  viaHub?: string;
  /** Where the CSR came in (audit details); MQTT unless said otherwise. */
  channel?: 'mqtt' | 'est';
}

/** Outcome of a device message: an answer to publish, or a coded rejection. */
export type DeviceReply<T> = { ok: true; value: T } | { ok: false; error: Error & { code: string } };

const MAX_SERIAL_RETRIES = 3;

/** The API view of a stored device: drops everything that must never leave the service. */
export function toDeviceView(rec: DeviceRecord): Device {
  const { claimCodeHash: _h, network: _n, bootstrapJti: _j, revision: _r, lastConfigVersion: _v, previousCertificateSerial: _p, certificateConfirmedAt: _c, enrolledWithBirthSerial: _b, ...view } = rec;
  return view;
}

export class ProvisioningService {
  readonly #validateCsr: Validator<MqttCsrRequest>;
  readonly #validateAck: Validator<MqttConfigAck>;
  readonly #validateHubClaim: Validator<MqttHubClaim>;

  constructor(private readonly core: ProvisioningCore) {
    this.#validateCsr = getValidator(core.ajv, 'mqtt-csr-request');
    this.#validateAck = getValidator(core.ajv, 'mqtt-config-ack');
    this.#validateHubClaim = getValidator(core.ajv, 'mqtt-hub-claim');
  }

  // ---------------------------------------------------------------- registry

  async registerDevice(ctx: TenantContext, input: DeviceRegisterRequest): Promise<Device> {
    const now = this.core.writer.now();
    const record: DeviceRecord = {
      id: input.id,
      tenantId: ctx.tenantId,
      model: input.model,
      state: 'registered',
      createdAt: now,
      updatedAt: now,
      // a device on the zero-touch allowlist only (no label) gets an unguessable code nobody knows
      claimCodeHash: this.core.codes.hashForRegistration(input.claimCode ?? randomBytes(32).toString('hex')),
      revision: 1,
    };
    if (input.birthSerial) record.birthSerial = normalizeSerial(input.birthSerial);
    if (input.hub) record.hub = true;
    try {
      await this.core.store.insertDevice(record, [this.core.writer.event(record, 'registered', ctx.actor, { to: 'registered' })]);
    } catch (err) {
      throw mapStoreError(err);
    }
    return toDeviceView(record);
  }

  async getDevice(ctx: Pick<TenantContext, 'tenantId'>, id: string): Promise<Device> {
    return toDeviceView(await this.core.writer.load(id, ctx.tenantId));
  }

  async listDevices(ctx: Pick<TenantContext, 'tenantId'>, query: { state?: Device['state']; profileId?: string; after?: string; limit: number }): Promise<Device[]> {
    return (await this.core.store.listDevices({ ...query, tenantId: ctx.tenantId })).map(toDeviceView);
  }

  async history(ctx: Pick<TenantContext, 'tenantId'>, id: string): Promise<DeviceEvent[]> {
    await this.core.writer.load(id, ctx.tenantId);
    return this.core.store.listEvents(id);
  }

  // ------------------------------------------------------------------- claim

  /**
   * Claim with the label's code. A wrong code, an unknown device and another tenant's device all
   * answer the same CLAIM_CODE_INVALID; "already claimed" is only said to whoever knows the code.
   */
  async claimDevice(ctx: TenantContext & { client: string; viaHub?: string }, input: ClaimRequest): Promise<ClaimResponse> {
    // a refused claim is recorded with the device id the caller named, or the one its code found
    // in the caller's own tenant (never one of another tenant); the code never goes into the log
    const seen: { deviceId?: string } = input.deviceId !== undefined ? { deviceId: input.deviceId } : {};
    const about = () => ({ tenantId: ctx.tenantId, actor: ctx.actor, action: 'device.claim' as const, ...seen, ...(ctx.viaHub ? { details: { viaHub: ctx.viaHub } } : {}) });
    return auditFailures(this.core.audit, about, () => this.#claim(ctx, input, seen));
  }

  async #claim(ctx: TenantContext & { client: string; viaHub?: string }, input: ClaimRequest, seen: { deviceId?: string }): Promise<ClaimResponse> {
    const { store, writer } = this.core;
    // 1. throttle, per client and, when the claim names a device, per device (whether it exists
    //    or not, so the limit tells nothing about existence)
    const keys = [`client:${ctx.client}`, ...(input.deviceId !== undefined ? [`device:${ctx.tenantId}:${input.deviceId}`] : [])];
    for (const key of keys) {
      const verdict = await this.core.claimLimiter.check(key);
      if (verdict.limited) {
        throw new ProvisioningError('CLAIM_RATE_LIMITED', `too many wrong claim codes; retry in ${verdict.retryAfterSeconds} s`, {
          details: { retryAfterSeconds: verdict.retryAfterSeconds },
        });
      }
    }
    // 2. find the device by its code, in the caller's tenant
    let found: DeviceRecord | undefined;
    for (const hash of this.core.codes.lookupHashes(input.claimCode)) {
      found = await store.findDeviceByClaimCodeHash(hash);
      if (found) break;
    }
    if (!found || found.tenantId !== ctx.tenantId || (input.deviceId !== undefined && input.deviceId !== found.id)) {
      for (const key of keys) await this.core.claimLimiter.fail(key);
      throw new ProvisioningError('CLAIM_CODE_INVALID');
    }
    seen.deviceId = found.id;
    const network = input.network;
    if (network && network.wifi.security !== 'open' && !network.wifi.secret) throw new ProvisioningError('NETWORK_SECRET_REQUIRED');
    // 3. the profile and the tenant's window
    const tenant = await store.getTenant(found.tenantId);
    if (!tenant) throw new ProvisioningError('TENANT_NOT_FOUND');
    const profile = await this.core.profiles.resolve(found.tenantId, found.model, input.profileId);
    // a device claimed already is refused before a credential is stored (a refused claim must
    // leave nothing behind); the bind below checks again, for a claim that races this one
    if (found.state !== 'registered' && found.state !== 'released') throw new ProvisioningError('DEVICE_ALREADY_CLAIMED', `device ${found.id} is already claimed`);
    // 4. credential first: an orphan token (if the bind below loses a race) authenticates
    //    nothing, because only the jti recorded on the device is accepted. A device with an
    //    identity from the factory ("thin") needs none: it connects with its certificate.
    const factoryIdentity = found.state === 'registered' && !!found.certificateSerial;
    const issued = factoryIdentity ? undefined : await this.#newToken(found.id);
    // 5. bind
    const stored = await writer.mutate(found.id, ctx.tenantId, async (device) => {
      if (device.state !== 'registered' && device.state !== 'released') {
        throw new ProvisioningError('DEVICE_ALREADY_CLAIMED', `device ${device.id} is already claimed`);
      }
      if (!!device.certificateSerial !== factoryIdentity) throw new ProvisioningError('ISSUANCE_CONFLICT', 'the device changed while it was claimed; retry');
      assertTransition(device.state, 'claimed');
      const now = this.core.clock.now();
      const next: DeviceRecord = {
        ...device,
        state: 'claimed',
        owner: input.owner,
        site: input.site,
        claimedAt: now.toISOString(),
        profileId: profile.id,
        profileVersion: profile.version,
        deadlineAt: new Date(now.getTime() + profile.deadlineSeconds * 1000).toISOString(),
        provisionalUntil: new Date(now.getTime() + tenant.provisionalWindowDays * 86_400_000).toISOString(),
      };
      if (issued) next.bootstrapJti = issued.jti;
      if (ctx.viaHub) next.hubId = ctx.viaHub;
      else delete next.hubId;
      next.lastConfigVersion = lastConfigVersion(device);
      const keep = factoryIdentity ? ['certificateSerial', 'certificateNotAfter', 'identityIssuedAt'] : [];
      for (const k of ['network', 'config', 'certificateSerial', 'certificateNotAfter', 'certificateConfirmedAt', 'previousCertificateSerial', 'identityIssuedAt', 'provisionedAt', 'stalledAt', 'releasedAt'] as const) {
        if (!keep.includes(k)) delete next[k];
      }
      if (network) next.network = sealNetwork(this.core, device.id, network);
      const audit = [
        this.core.audit.entry({
          tenantId: device.tenantId,
          actor: ctx.actor,
          action: 'device.claim',
          deviceId: device.id,
          ...(factoryIdentity && device.certificateSerial ? { serial: device.certificateSerial } : {}),
          details: { profileId: profile.id, profileVersion: profile.version, ...(ctx.viaHub ? { viaHub: ctx.viaHub } : {}), ...(factoryIdentity ? { factoryIdentity: true } : {}), ...(issued ? { bootstrapJti: issued.jti } : {}) },
        }),
      ];
      const events = [
        writer.event(device, 'claimed', ctx.actor, {
          from: device.state,
          to: 'claimed',
          reason: `owner ${input.owner}, site ${input.site}, profile ${profile.id} v${profile.version}`,
        }),
      ];
      if (!factoryIdentity) return { next, events, extras: { audit } };
      // thin: the identity is there; the configuration is made for its key now. Fully
      // pre-provisioned: the baseline applied at the factory keeps its statuses, so with no site
      // network to send the claim only binds ownership and the device is provisioned at once.
      const version = lastConfigVersion(device) + 1;
      const built = await buildDocument(this.core, next, profile, version, await currentPublicKey(this.core, next));
      const baseline = device.config && device.profileId ? await this.core.store.getProfile(device.tenantId, device.profileId, device.profileVersion) : undefined;
      const items = itemStatuses(built.doc, baseline && device.config ? { previous: baseline, current: profile, statuses: device.config.items } : undefined);
      const done = pendingRequired(items).length === 0;
      assertTransition('claimed', 'identity_issued');
      next.state = 'identity_issued';
      next.config = { version, items };
      next.lastConfigVersion = version;
      events.push(writer.event(device, 'identity_issued', ctx.actor, { from: 'claimed', to: 'identity_issued', reason: `identity from the factory: certificate ${device.certificateSerial}` }));
      if (done) {
        assertTransition('identity_issued', 'provisioned');
        next.state = 'provisioned';
        next.provisionedAt = writer.now();
        events.push(writer.event(device, 'provisioned', ctx.actor, { from: 'identity_issued', to: 'provisioned', reason: 'pre-provisioned at the factory; the claim binds ownership' }));
      }
      return { next, events, extras: { configDocument: built.record, audit } };
    });
    await this.core.claimLimiter.reset(`client:${ctx.client}`);
    this.core.events.emit({ tenantId: stored.tenantId, type: 'device.claimed', deviceId: stored.id, data: { owner: input.owner, site: input.site } });
    return issued ? { device: toDeviceView(stored), bootstrap: this.bootstrapView(stored.id, issued) } : { device: toDeviceView(stored) };
  }

  /**
   * A new bootstrap credential for a claimed device that has no identity yet (the first one
   * expired or was lost). The previous credential stops working.
   */
  async reissueBootstrap(ctx: TenantContext, deviceId: string): Promise<ClaimResponse> {
    return auditFailures(this.core.audit, { tenantId: ctx.tenantId, actor: ctx.actor, action: 'bootstrap.reissue', deviceId }, () => this.#reissueBootstrap(ctx, deviceId));
  }

  async #reissueBootstrap(ctx: TenantContext, deviceId: string): Promise<ClaimResponse> {
    const device = await this.core.writer.load(deviceId, ctx.tenantId);
    if (!awaitingIdentity(device)) {
      throw new ProvisioningError('DEVICE_STATE_INVALID', `a new bootstrap credential is only issued to a claimed device without identity; ${deviceId} is ${device.state}`);
    }
    const issued = await this.#newToken(deviceId);
    const stored = await this.core.writer.mutate(deviceId, ctx.tenantId, (d) => {
      if (!awaitingIdentity(d)) throw new ProvisioningError('DEVICE_STATE_INVALID', `device ${deviceId} is ${d.state}`);
      return {
        next: { ...d, bootstrapJti: issued.jti },
        events: [this.core.writer.event(d, 'bootstrap_reissued', ctx.actor, { reason: 'new bootstrap credential; the previous one is void' })],
        extras: {
          audit: [this.core.audit.entry({ tenantId: d.tenantId, actor: ctx.actor, action: 'bootstrap.reissue', deviceId, details: { bootstrapJti: issued.jti, ...(d.bootstrapJti ? { replacesJti: d.bootstrapJti } : {}) } })],
        },
      };
    });
    return { device: toDeviceView(stored), bootstrap: this.bootstrapView(deviceId, issued) };
  }

  async #newToken(deviceId: string) {
    const issued = await this.core.tokens.issue(deviceId, this.core.settings.tokenTtlSeconds);
    await this.core.store.insertBootstrapToken({
      jti: issued.jti,
      deviceId,
      issuedAt: issued.issuedAt.toISOString(),
      expiresAt: issued.expiresAt.toISOString(),
    });
    return issued;
  }

  /** The claim response's bootstrap object for a new credential. */
  bootstrapView(deviceId: string, issued: { token: string; expiresAt: Date }): ClaimResponse['bootstrap'] {
    return {
      token: issued.token,
      expiresAt: issued.expiresAt.toISOString(),
      mqttUrl: this.core.settings.mqttUrl(),
      clientId: deviceId,
      username: deviceId,
      caCertificate: this.core.issuer.rootPem,
    };
  }

  /** A fresh credential (for lifecycle.ts: re-provisioning). */
  newBootstrap(deviceId: string) {
    return this.#newToken(deviceId);
  }

  // ------------------------------------------------------------ broker auth

  /** CONNECT without a client certificate: username = device id, password = bootstrap token. */
  async authenticateBootstrap(clientId: string, username: string | undefined, password: string | undefined): Promise<DeviceSession> {
    if (!username || !password) throw new ProvisioningError('TOKEN_INVALID', 'bootstrap connections need username and password');
    const claims = await this.core.tokens.verify(password);
    if (claims.deviceId !== username) throw new ProvisioningError('TOKEN_INVALID', 'the credential names another device');
    if (clientId !== claims.deviceId) throw new ProvisioningError('CLIENT_ID_MISMATCH');
    const [read, device] = await Promise.all([this.core.store.getBootstrapToken(claims.jti), this.core.store.getDevice(claims.deviceId)]);
    // Read in parallel, the two may straddle another instance's issuance commit (token read before
    // it consumed the token, device after): then the token as it is now decides.
    const straddled = read && !read.consumedAt && device && !awaitingIdentity(device);
    const token = straddled ? await this.core.store.getBootstrapToken(claims.jti) : read;
    if (!token || !device || token.deviceId !== device.id || device.bootstrapJti !== claims.jti) {
      throw new ProvisioningError('TOKEN_INVALID', 'the credential is not the current one of this device');
    }
    if (token.consumedAt) {
      // The one exception: a device that lost the certificate answer may come back for it with
      // the same key until its first configuration was delivered.
      if (!resendWindowOpen(device, token.certificateSerial)) throw new ProvisioningError('TOKEN_USED');
    } else if (!awaitingIdentity(device)) {
      throw new ProvisioningError('DEVICE_STATE_INVALID', `device is ${device.state}`);
    }
    return { deviceId: device.id, kind: 'bootstrap', jti: claims.jti };
  }

  /**
   * CONNECT with a client certificate that chains to the CA: it must be the device's current,
   * active certificate and the client id its device id. An expired certificate (TLS said so)
   * gets a renewal-only session when the device's profile allows it.
   */
  async authenticateOperational(clientId: string, certificate: Buffer | X509Certificate, opts: { expired?: boolean } = {}): Promise<DeviceSession> {
    const x509 = certificate instanceof X509Certificate ? certificate : new X509Certificate(certificate);
    const serial = x509.serialNumber.toLowerCase();
    const cert = await this.core.store.getCertificate(serial);
    if (!cert || cert.status === 'revoked') throw new ProvisioningError('CERTIFICATE_UNKNOWN');
    if (cert.deviceId !== clientId) throw new ProvisioningError('CLIENT_ID_MISMATCH');
    const device = await this.core.store.getDevice(cert.deviceId);
    if (!device) throw new ProvisioningError('CERTIFICATE_UNKNOWN');
    const current = cert.status === 'active' && device.certificateSerial === serial;
    // after a renewal, the replaced certificate works until the new one is first used (a lost answer)
    const previous = cert.status === 'superseded' && device.previousCertificateSerial === serial && !device.certificateConfirmedAt;
    if (!current && !previous) throw new ProvisioningError('CERTIFICATE_UNKNOWN');
    if (!ACTIVE_STATES.includes(device.state) || device.state === 'claimed') {
      throw new ProvisioningError('DEVICE_STATE_INVALID', `device is ${device.state}`);
    }
    const expired = opts.expired === true || Date.parse(cert.notAfter) <= this.core.clock.now().getTime();
    if (expired) {
      const profile = await this.#profileOf(device).catch(() => undefined);
      if (!profile?.allowExpiredRenewal) throw new ProvisioningError('CERTIFICATE_EXPIRED');
      return { deviceId: device.id, kind: 'renewal', certificateSerial: serial };
    }
    // Confirming matters only when it ends the grace of a replaced certificate (a renewal); a
    // first identity has none, and a write per device connection would buy nothing.
    if (current && !device.certificateConfirmedAt && device.previousCertificateSerial) await this.#confirmCertificate(device.id, serial);
    return { deviceId: device.id, kind: 'operational', certificateSerial: serial, ...(device.hub ? { hub: true } : {}) };
  }

  /** The current certificate was used: the one it replaced (if any) is revoked as superseded. */
  async #confirmCertificate(deviceId: string, serial: string): Promise<void> {
    await this.core.writer.mutate(deviceId, undefined, (d) => {
      if (d.certificateSerial !== serial || d.certificateConfirmedAt) return undefined;
      const next: DeviceRecord = { ...d, certificateConfirmedAt: this.core.writer.now() };
      delete next.previousCertificateSerial;
      const certificates = d.previousCertificateSerial
        ? [{ serial: d.previousCertificateSerial, status: 'revoked' as const, revokedAt: this.core.writer.now(), revocationReason: 'superseded' }]
        : [];
      return { next, events: [], extras: { certificates } };
    });
  }

  /**
   * Zero-touch: a client certificate that does not chain to the service CA may be a
   * manufacturer birth certificate. It is accepted only when it chains to a manufacturer CA a
   * tenant registered, is valid now, names the device (client id), and its serial is the one the
   * tenant put on its allowlist for that device, which must not be enrolled yet. Deny by default.
   */
  async authenticateBirth(clientId: string, certificate: Buffer | X509Certificate): Promise<DeviceSession> {
    const cert = certificate instanceof X509Certificate ? certificate : new X509Certificate(certificate);
    const now = this.core.clock.now().getTime();
    const device = await this.core.store.getDevice(clientId);
    let tenantId: string | undefined;
    let caId: string | undefined;
    for (const tenant of await this.core.store.listTenants()) {
      for (const ca of tenant.manufacturerCas ?? []) {
        const issuer = new X509Certificate(ca.certificate);
        // several tenants may trust the same manufacturer CA (it is public): the device's own
        // tenant decides, whatever another tenant registered
        if ((!tenantId || tenant.id === device?.tenantId) && cert.checkIssued(issuer) && cert.verify(issuer.publicKey)) {
          tenantId = tenant.id;
          caId = ca.id;
        }
      }
    }
    if (!tenantId) throw new ProvisioningError('CERTIFICATE_UNTRUSTED', 'the client certificate chains to no CA this service or its tenants trust');
    if (Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) < now) throw new ProvisioningError('CERTIFICATE_EXPIRED', 'the birth certificate is outside its validity');
    // the birth certificate must name the device it enrols: subject CN = device id = client id
    const cn = /^CN=(.*)$/m.exec(cert.subject)?.[1];
    if (cn !== clientId) throw new ProvisioningError('BIRTH_NOT_ALLOWED', 'the birth certificate does not name this device (subject CN)');
    const serial = normalizeSerial(cert.serialNumber);
    if (!device || device.tenantId !== tenantId || device.birthSerial !== serial) throw new ProvisioningError('BIRTH_NOT_ALLOWED');
    const enrolling = device.state === 'registered' && !device.certificateSerial;
    const resending = device.state === 'identity_issued' && device.enrolledWithBirthSerial === serial;
    if (!enrolling && !resending) throw new ProvisioningError('BIRTH_ALREADY_ENROLLED');
    return { deviceId: device.id, kind: 'birth', certificateSerial: serial, ...(caId ? { jti: `manufacturer-ca:${caId}` } : {}) };
  }

  // -------------------------------------------------------------------- hubs

  /**
   * devices/<hub>/hub/claim: a provisioned hub claims a device it discovered, for its own owner
   * and site, in its own tenant, with the code from the device's label (the same checks, throttle
   * and answers as an installer's claim). The child joins the hub's site network.
   */
  async hubClaim(session: DeviceSession, payload: Buffer): Promise<DeviceReply<MqttHubClaimed> & { requestId?: string }> {
    let requestId: string | undefined;
    try {
      const req = this.#parse(payload, this.#validateHubClaim);
      requestId = req.requestId;
      const hub = await this.core.writer.load(session.deviceId);
      if (!session.hub || !hub.hub || hub.state !== 'provisioned') throw new ProvisioningError('DEVICE_STATE_INVALID', 'only a provisioned hub claims devices');
      const network = hub.network ? deviceNetwork(this.core, hub) : undefined;
      const res = await this.claimDevice(
        { tenantId: hub.tenantId, actor: `device:${hub.id}`, role: 'hub', client: `hub:${hub.id}`, viaHub: hub.id },
        {
          claimCode: req.claimCode,
          owner: hub.owner ?? hub.tenantId,
          site: hub.site ?? hub.tenantId,
          ...(req.deviceId ? { deviceId: req.deviceId } : {}),
          ...(network ? { network } : {}),
        },
      );
      return { ok: true, requestId, value: { requestId: req.requestId, deviceId: res.device.id, state: res.device.state } };
    } catch (err) {
      return { ok: false, requestId, error: asCoded(err) };
    }
  }

  /** Whether `childId` is a device this hub claimed (and so may relay for). */
  async isChildOf(hubId: string, childId: string): Promise<boolean> {
    const child = await this.core.store.getDevice(childId);
    return child?.hubId === hubId;
  }

  /** devices/<hub>/children/<child>/csr: the hub relays its child's CSR; the hub's session authorizes it. */
  async submitChildCsr(session: DeviceSession, childId: string, payload: Buffer): Promise<DeviceReply<MqttCsrAccepted> & { requestId?: string }> {
    if (!session.hub || !(await this.isChildOf(session.deviceId, childId))) {
      const error = new ProvisioningError('TOPIC_FORBIDDEN', `${childId} is not a child of hub ${session.deviceId}`);
      const hub = await this.core.store.getDevice(session.deviceId).catch(() => undefined);
      if (hub) {
        await this.core.audit.record(
          this.core.audit.failure({ tenantId: hub.tenantId, actor: `device:${hub.id}`, action: 'certificate.issue', deviceId: childId, details: { channel: 'mqtt', viaHub: hub.id } }, error),
        );
      }
      return { ok: false, error };
    }
    return this.submitCsr({ deviceId: childId, kind: 'bootstrap', viaHub: session.deviceId }, payload);
  }

  // --------------------------------------------------------------- identity

  /**
   * devices/<id>/csr. On a bootstrap session: verify, issue the device's identity and its first
   * config document, consume the credential, all in one commit. On an operational or renewal
   * session: renew the certificate (the old one is superseded).
   */
  async submitCsr(session: DeviceSession, payload: Buffer, opts: { channel?: 'mqtt' | 'est' } = {}): Promise<DeviceReply<MqttCsrAccepted> & { requestId?: string }> {
    let requestId: string | undefined;
    if (opts.channel) session = { ...session, channel: opts.channel };
    try {
      // 1. validate (the requestId is echoed whenever it can be read, even from an invalid request)
      const data = this.#json(payload);
      const candidate = (data as { requestId?: unknown } | null)?.requestId;
      if (typeof candidate === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(candidate)) requestId = candidate;
      const req = this.#validate(data, this.#validateCsr);
      const csr = this.core.issuer.parseCsr(req.csr);
      // 2. authorize: the key must not be another device's
      const other = await this.core.store.findCertificateByKey(csr.keyFingerprint);
      if (other && other.deviceId !== session.deviceId) throw new ProvisioningError('KEY_IN_USE');
      // 3. issue
      const cert =
        session.kind === 'bootstrap'
          ? session.viaHub
            ? await this.#issueForHub(session, csr)
            : await this.#issueIdentity(session, csr)
          : session.kind === 'birth'
            ? await this.#enrollByBirth(session, csr)
            : await this.#renew(session, csr);
      return { ok: true, requestId, value: this.#accepted(req.requestId, cert) };
    } catch (err) {
      await this.#auditCsrFailure(session, err);
      return { ok: false, requestId, error: asCoded(err) };
    }
  }

  /** Who sent a CSR: the device, or the hub relaying for it. */
  #csrActor(session: DeviceSession): string {
    return `device:${session.viaHub ?? session.deviceId}`;
  }

  #csrDetails(session: DeviceSession): Record<string, string> {
    return { channel: session.channel ?? 'mqtt', ...(session.viaHub ? { viaHub: session.viaHub } : {}) };
  }

  /** The audit entry of a certificate issued or renewed from a CSR (in the issuance commit). */
  #certificateAudit(
    device: DeviceRecord,
    session: DeviceSession,
    action: 'certificate.issue' | 'certificate.renew',
    serial: string,
    details: Record<string, string | number | boolean>,
  ) {
    return this.core.audit.entry({
      tenantId: device.tenantId,
      actor: this.#csrActor(session),
      action,
      deviceId: device.id,
      serial,
      details: { ...this.#csrDetails(session), ...details },
    });
  }

  /** A refused CSR: certificate.issue (bootstrap, birth) or certificate.renew, with the code the device got. */
  async #auditCsrFailure(session: DeviceSession, err: unknown): Promise<void> {
    const device = await this.core.store.getDevice(session.deviceId).catch(() => undefined);
    const renewal = session.kind === 'operational' || session.kind === 'renewal';
    await this.core.audit.record(
      this.core.audit.failure(
        {
          tenantId: device?.tenantId ?? SERVICE_TENANT,
          actor: this.#csrActor(session),
          action: renewal ? 'certificate.renew' : 'certificate.issue',
          deviceId: session.deviceId,
          ...(renewal && session.certificateSerial ? { serial: session.certificateSerial } : {}),
          details: this.#csrDetails(session),
        },
        err,
      ),
    );
  }

  /** A hub relays its child's CSR: the hub vouches for the child, no bootstrap credential is used. */
  async #issueForHub(session: DeviceSession, csr: ReturnType<ProvisioningCore['issuer']['parseCsr']>): Promise<CertificateRecord> {
    const child = await this.core.writer.load(session.deviceId);
    if (child.hubId !== session.viaHub) throw new ProvisioningError('TOPIC_FORBIDDEN');
    if (child.certificateSerial) {
      // a lost answer: the same key gets the same certificate until the configuration was delivered
      const current = await this.core.store.getCertificate(child.certificateSerial);
      if (child.state === 'identity_issued' && current?.keyFingerprint === csr.keyFingerprint) return current;
      throw new ProvisioningError('DEVICE_STATE_INVALID', `device ${child.id} already has its identity`);
    }
    // A child's credential is never shown to anyone (the hub vouches for the child), so its record
    // may have been swept after expiry (sweepExpiredTokens) while the hub was still onboarding: put
    // it back to be consumed. Its JWT stays expired, so this lets no bootstrap session in.
    if (child.bootstrapJti && !(await this.core.store.getBootstrapToken(child.bootstrapJti))) {
      const now = this.core.clock.now();
      const expiresAt = new Date(now.getTime() + this.core.settings.tokenTtlSeconds * 1000).toISOString();
      await this.core.store
        .insertBootstrapToken({ jti: child.bootstrapJti, deviceId: child.id, issuedAt: now.toISOString(), expiresAt })
        .catch((err: unknown) => {
          if (!(err instanceof StoreError && err.code === 'TOKEN_EXISTS')) throw mapStoreError(err);
        });
    }
    return this.#issueIdentity({ ...session, jti: undefined }, csr, child.bootstrapJti);
  }

  async #issueIdentity(session: DeviceSession, csr: ReturnType<ProvisioningCore['issuer']['parseCsr']>, hubRelayJti?: string): Promise<CertificateRecord> {
    const { store, writer } = this.core;
    const token = await store.getBootstrapToken(session.jti ?? hubRelayJti ?? '');
    if (!token) throw new ProvisioningError('TOKEN_INVALID');
    if (token.consumedAt) {
      // Idempotent re-send for the same key; anything else is a reused credential.
      const device = await writer.load(session.deviceId);
      if (token.keyFingerprint !== csr.keyFingerprint || !resendWindowOpen(device, token.certificateSerial)) throw new ProvisioningError('TOKEN_USED');
      const cert = await store.getCertificate(token.certificateSerial!);
      if (!cert || cert.status !== 'active') throw new ProvisioningError('TOKEN_USED');
      return cert;
    }
    for (let attempt = 0; ; attempt++) {
      const device = await writer.load(session.deviceId);
      if (!awaitingIdentity(device) || device.bootstrapJti !== token.jti) {
        // A concurrent CSR with this credential (another connection, another instance) may have
        // consumed it since it was read above: answer as a re-send would (the same certificate
        // for the same key, TOKEN_USED for another key), not as if the credential were replaced.
        const fresh = device.bootstrapJti === token.jti ? await store.getBootstrapToken(token.jti) : undefined;
        if (fresh?.consumedAt) {
          if (fresh.keyFingerprint !== csr.keyFingerprint || !resendWindowOpen(device, fresh.certificateSerial)) throw new ProvisioningError('TOKEN_USED');
          const cert = await store.getCertificate(fresh.certificateSerial!);
          if (!cert || cert.status !== 'active') throw new ProvisioningError('TOKEN_USED');
          return cert;
        }
        throw new ProvisioningError('DEVICE_STATE_INVALID', `device is ${device.state}`);
      }
      const profile = await this.#profileOf(device);
      const issued = this.core.issuer.issueDevice({ deviceId: device.id, spkiDer: csr.spkiDer });
      const now = this.core.clock.now().toISOString();
      const version = lastConfigVersion(device) + 1;
      const built = await buildDocument(this.core, device, profile, version, csr);
      const items = itemStatuses(built.doc);
      // a stalled device stays stalled until it is provisioned; with nothing required, an identity is all it takes
      const done = pendingRequired(items).length === 0;
      const state = done ? 'provisioned' : device.state === 'stalled' ? 'stalled' : 'identity_issued';
      const next: DeviceRecord = {
        ...device,
        state,
        identityIssuedAt: now,
        updatedAt: now,
        certificateSerial: issued.serial,
        certificateNotAfter: issued.notAfter.toISOString(),
        config: { version, items },
        lastConfigVersion: version,
      };
      for (const k of ['certificateConfirmedAt', 'previousCertificateSerial'] as const) delete next[k];
      if (done) next.provisionedAt = now;
      const events = [writer.event(device, 'identity_issued', `device:${device.id}`, { from: device.state, to: done ? 'identity_issued' : state, reason: `certificate ${issued.serial}` })];
      if (state !== device.state) assertTransition(device.state, done ? 'identity_issued' : state);
      if (done) {
        assertTransition('identity_issued', 'provisioned');
        events.push(writer.event(device, 'provisioned', `device:${device.id}`, { from: 'identity_issued', to: 'provisioned', reason: 'identity issued; the profile requires no item' }));
      }
      const certificate = certificateRecord(device.id, csr.keyFingerprint, issued, now);
      try {
        await store.commitIssuance({
          device: next,
          expectedRevision: device.revision,
          events,
          certificate,
          consumeToken: { jti: token.jti, consumedAt: now },
          configDocument: built.record,
          // re-provisioning after a factory reset: the old key is presumed gone
          previousCertificates: { status: 'revoked', revokedAt: now, revocationReason: 'superseded' },
          audit: [
            this.#certificateAudit(device, session, 'certificate.issue', issued.serial, { keyFingerprint: csr.keyFingerprint, bootstrapJti: token.jti }),
          ],
        });
        this.core.events.emit({ tenantId: device.tenantId, type: 'device.identity_issued', deviceId: device.id, data: { serial: issued.serial } });
        if (done) this.core.events.emit({ tenantId: device.tenantId, type: 'device.provisioned', deviceId: device.id, data: { configVersion: version, pending: [] } });
        return certificate;
      } catch (err) {
        const code = err instanceof StoreError ? err.code : undefined;
        if ((code === 'SERIAL_EXISTS' && attempt < MAX_SERIAL_RETRIES) || (code === 'REVISION_CONFLICT' && attempt < 8)) continue;
        if (code === 'TOKEN_USED') {
          // A concurrent CSR with the same credential won; answer as a re-send would.
          const fresh = await store.getBootstrapToken(token.jti);
          const cert = fresh?.keyFingerprint === csr.keyFingerprint && fresh.certificateSerial ? await store.getCertificate(fresh.certificateSerial) : undefined;
          if (cert) return cert;
        }
        throw mapStoreError(err);
      }
    }
  }

  /**
   * Zero-touch enrollment on a birth-certificate session: the tenant's pre-provisioning webhook
   * (if any) must allow it, then the device is claimed for its tenant and gets its identity and
   * first configuration in one commit. A lost answer: the same CSR again returns the same
   * certificate until the configuration was delivered.
   */
  async #enrollByBirth(session: DeviceSession, csr: ReturnType<ProvisioningCore['issuer']['parseCsr']>): Promise<CertificateRecord> {
    const { store, writer } = this.core;
    const first = await writer.load(session.deviceId);
    if (first.state === 'identity_issued' && first.enrolledWithBirthSerial === session.certificateSerial && first.certificateSerial) {
      const current = await store.getCertificate(first.certificateSerial);
      if (current?.keyFingerprint === csr.keyFingerprint) return current;
      throw new ProvisioningError('BIRTH_ALREADY_ENROLLED');
    }
    const tenant = await store.getTenant(first.tenantId);
    if (!tenant) throw new ProvisioningError('TENANT_NOT_FOUND');
    if (tenant.preprovisionWebhook) {
      const verdict = await askPreprovisionWebhook(
        {
          ...tenant.preprovisionWebhook,
          ...(tenant.preprovisionWebhook.secret ? { secret: this.core.box.open(tenant.preprovisionWebhook.secret, `preprovision:${tenant.id}`) } : {}),
        },
        { tenantId: tenant.id, deviceId: first.id, model: first.model, birthSerial: session.certificateSerial, manufacturerCa: session.jti?.slice('manufacturer-ca:'.length) },
      );
      if (!verdict.allow) throw new ProvisioningError('BIRTH_DENIED', verdict.reason);
    }
    const profile = await this.core.profiles.resolve(first.tenantId, first.model);
    for (let attempt = 0; ; attempt++) {
      const device = await writer.load(session.deviceId);
      if (device.state !== 'registered' || device.certificateSerial) throw new ProvisioningError('BIRTH_ALREADY_ENROLLED');
      assertTransition('registered', 'claimed');
      assertTransition('claimed', 'identity_issued');
      const nowDate = this.core.clock.now();
      const now = nowDate.toISOString();
      const issued = this.core.issuer.issueDevice({ deviceId: device.id, spkiDer: csr.spkiDer });
      const version = lastConfigVersion(device) + 1;
      const claimedDevice: DeviceRecord = {
        ...device,
        state: 'claimed',
        claimedAt: now,
        profileId: profile.id,
        profileVersion: profile.version,
        deadlineAt: new Date(nowDate.getTime() + profile.deadlineSeconds * 1000).toISOString(),
        provisionalUntil: new Date(nowDate.getTime() + tenant.provisionalWindowDays * 86_400_000).toISOString(),
      };
      const built = await buildDocument(this.core, claimedDevice, profile, version, csr);
      const items = itemStatuses(built.doc);
      const next: DeviceRecord = {
        ...claimedDevice,
        state: 'identity_issued',
        identityIssuedAt: now,
        updatedAt: now,
        certificateSerial: issued.serial,
        certificateNotAfter: issued.notAfter.toISOString(),
        enrolledWithBirthSerial: session.certificateSerial!,
        config: { version, items },
        lastConfigVersion: version,
      };
      const certificate = certificateRecord(device.id, csr.keyFingerprint, issued, now);
      const actor = session.jti ?? 'manufacturer-ca';
      try {
        await store.commitIssuance({
          device: next,
          expectedRevision: device.revision,
          events: [
            writer.event(device, 'claimed', actor, { from: 'registered', to: 'claimed', reason: `zero-touch: birth certificate ${session.certificateSerial}, profile ${profile.id} v${profile.version}` }),
            writer.event(device, 'identity_issued', `device:${device.id}`, { from: 'claimed', to: 'identity_issued', reason: `certificate ${issued.serial}` }),
          ],
          certificate,
          configDocument: built.record,
          audit: [
            this.core.audit.entry({
              tenantId: device.tenantId,
              actor: this.#csrActor(session),
              action: 'device.claim',
              deviceId: device.id,
              details: { zeroTouch: true, birthSerial: session.certificateSerial!, ...(session.jti ? { manufacturerCa: session.jti.slice('manufacturer-ca:'.length) } : {}), profileId: profile.id, profileVersion: profile.version },
            }),
            this.#certificateAudit(device, session, 'certificate.issue', issued.serial, { zeroTouch: true, keyFingerprint: csr.keyFingerprint }),
          ],
        });
        this.core.events.emit({ tenantId: device.tenantId, type: 'device.identity_issued', deviceId: device.id, data: { serial: issued.serial, zeroTouch: true } });
        return certificate;
      } catch (err) {
        const code = err instanceof StoreError ? err.code : undefined;
        if ((code === 'SERIAL_EXISTS' || code === 'REVISION_CONFLICT') && attempt < 5) continue;
        throw mapStoreError(err);
      }
    }
  }

  /**
   * Renewal over an operational (or renewal-only) session: a new certificate supersedes the old
   * one, and a new config document is made for the new key (the Wi-Fi secret is encrypted to it),
   * keeping every item's status. The replaced certificate stays usable until the new one is first
   * used, so a device that lost the answer reconnects with it and sends the same CSR again.
   */
  async #renew(session: DeviceSession, csr: ReturnType<ProvisioningCore['issuer']['parseCsr']>): Promise<CertificateRecord> {
    const { store, writer } = this.core;
    for (let attempt = 0; ; attempt++) {
      const device = await writer.load(session.deviceId);
      if (!ACTIVE_STATES.includes(device.state) || !device.certificateSerial) throw new ProvisioningError('DEVICE_STATE_INVALID', `a ${device.state} device does not renew`);
      const fromCurrent = device.certificateSerial === session.certificateSerial;
      const fromPrevious = device.previousCertificateSerial === session.certificateSerial && !device.certificateConfirmedAt;
      if (!fromCurrent && !fromPrevious) throw new ProvisioningError('CERTIFICATE_UNKNOWN', 'this connection presents a certificate that is no longer current');
      if (fromPrevious) {
        const current = await store.getCertificate(device.certificateSerial);
        if (current?.keyFingerprint === csr.keyFingerprint) return current; // the lost answer, again
      }
      const issued = this.core.issuer.issueDevice({ deviceId: device.id, spkiDer: csr.spkiDer });
      const now = this.core.clock.now().toISOString();
      const certificate = certificateRecord(device.id, csr.keyFingerprint, issued, now);
      const profile = await this.#profileOf(device);
      const version = lastConfigVersion(device) + 1;
      const built = device.config ? await buildDocument(this.core, device, profile, version, csr) : undefined;
      const next: DeviceRecord = {
        ...device,
        certificateSerial: issued.serial,
        certificateNotAfter: certificate.notAfter,
        previousCertificateSerial: fromCurrent ? device.certificateSerial : device.previousCertificateSerial!,
        updatedAt: now,
        ...(built ? { config: { version, items: itemStatuses(built.doc, { previous: profile, current: profile, statuses: device.config!.items }) }, lastConfigVersion: version } : {}),
      };
      delete next.certificateConfirmedAt;
      try {
        await store.commitIssuance({
          device: next,
          expectedRevision: device.revision,
          events: [writer.event(device, 'certificate_renewed', `device:${device.id}`, { reason: `certificate ${issued.serial} replaces ${device.certificateSerial}` })],
          certificate,
          ...(built ? { configDocument: built.record } : {}),
          previousCertificates: { status: 'superseded' },
          audit: [
            this.#certificateAudit(device, session, 'certificate.renew', issued.serial, {
              ...(device.certificateSerial ? { replaces: device.certificateSerial } : {}),
              keyFingerprint: csr.keyFingerprint,
              ...(session.kind === 'renewal' ? { expired: true } : {}),
            }),
          ],
        });
        return certificate;
      } catch (err) {
        const code = err instanceof StoreError ? err.code : undefined;
        if ((code === 'SERIAL_EXISTS' && attempt < MAX_SERIAL_RETRIES) || (code === 'REVISION_CONFLICT' && attempt < 8)) continue;
        throw mapStoreError(err);
      }
    }
  }

  async #profileOf(device: DeviceRecord) {
    // devices claimed before profiles existed follow their tenant's default for the model
    if (!device.profileId) return this.core.profiles.resolve(device.tenantId, device.model);
    const profile = await this.core.store.getProfile(device.tenantId, device.profileId, device.profileVersion);
    if (!profile) throw new ProvisioningError('PROFILE_NOT_FOUND', `profile ${device.profileId} v${device.profileVersion} is gone`);
    return profile;
  }

  #accepted(requestId: string, cert: { pem: string; serial: string; notBefore: string; notAfter: string }): MqttCsrAccepted {
    return {
      requestId,
      certificate: cert.pem,
      chain: [...this.core.issuer.chainPems],
      serial: cert.serial,
      notBefore: cert.notBefore,
      notAfter: cert.notAfter,
    };
  }

  // ----------------------------------------------------------- configuration

  /**
   * An operational session subscribed to its config topic: the current document if any required
   * item is not yet applied (re-delivery until acknowledged). The first delivery moves the device
   * from identity_issued to configuring.
   */
  async pendingConfig(deviceId: string): Promise<string | undefined> {
    let jws: string | undefined;
    await this.core.writer.mutate(deviceId, undefined, async (device) => {
      jws = undefined;
      const config = device.config;
      if (!config || !awaitingAcknowledgement(config.items)) return undefined;
      jws = (await this.core.store.getConfigDocument(deviceId, config.version))?.jws;
      if (!jws || device.state !== 'identity_issued') return undefined;
      return {
        next: { ...device, state: 'configuring' },
        events: [this.core.writer.event(device, 'config_delivered', 'system', { from: device.state, to: 'configuring', reason: `config version ${config.version}` })],
      };
    });
    return jws;
  }

  /**
   * devices/<id>/config/ack: record per-item outcomes. Every required item applied ->
   * provisioned; a required item failed -> failed (a stalled device stays stalled); a failed
   * device whose failed items are applied while others are pending -> configuring.
   */
  async acknowledge(deviceId: string, payload: Buffer): Promise<DeviceReply<MqttState>> {
    try {
      const ack = this.#parse(payload, this.#validateAck);
      let reply: MqttState | undefined;
      let became: Device['state'] | undefined;
      const stored = await this.core.writer.mutate(deviceId, undefined, (device) => {
        became = undefined;
        const config = device.config;
        if (!config || device.state === 'identity_issued' || ack.version > config.version) {
          throw new ProvisioningError('CONFIG_VERSION_UNKNOWN', `config version ${ack.version} was never sent to this device`);
        }
        if (ack.version < config.version) throw new ProvisioningError('CONFIG_VERSION_STALE', `config version ${ack.version} was superseded by ${config.version}`);
        for (const item of ack.items) {
          if (!config.items.some((i) => i.id === item.id)) throw new ProvisioningError('CONFIG_ITEM_UNKNOWN', `config version ${ack.version} has no item ${item.id}`);
        }
        if (new Set(ack.items.map((i) => i.id)).size !== ack.items.length) throw new ProvisioningError('SCHEMA_INVALID', 'an item is acknowledged twice in one message');
        const now = this.core.writer.now();
        let changed = false;
        const items = config.items.map((cur): ConfigItemStatus => {
          const a = ack.items.find((x) => x.id === cur.id);
          if (!a || (cur.status === a.status && cur.error === a.error)) return cur;
          changed = true;
          const next: ConfigItemStatus = { ...cur, status: a.status, ackedAt: now };
          delete next.error;
          if (a.status === 'failed' && a.error) next.error = a.error;
          return next;
        });
        const pending = pendingRequired(items);
        const failed = items.filter((i) => i.required && i.status === 'failed').map((i) => i.id);
        const state: Device['state'] =
          pending.length === 0
            ? 'provisioned'
            : failed.length > 0 && device.state !== 'stalled'
              ? 'failed'
              : device.state === 'provisioned' || device.state === 'failed'
                ? 'configuring'
                : device.state;
        reply = { state, configVersion: config.version, pending };
        if (!changed && state === device.state) return undefined;
        const events: DeviceEvent[] = [
          this.core.writer.event(device, 'config_acknowledged', `device:${deviceId}`, {
            reason: ack.items.map((i) => `${i.id}=${i.status}${i.error ? ` (${i.error})` : ''}`).join(', '),
          }),
        ];
        const next: DeviceRecord = { ...device, config: { version: config.version, items } };
        if (state !== device.state) {
          assertTransition(device.state, state);
          next.state = state;
          became = state;
          const type = state === 'provisioned' ? 'provisioned' : state === 'failed' ? 'failed' : 'config_acknowledged';
          if (state === 'provisioned') next.provisionedAt = now;
          const reason = state === 'provisioned' ? 'every required item applied' : state === 'failed' ? `required item(s) failed: ${failed.join(', ')}` : `required item(s) pending: ${pending.join(', ')}`;
          events.push(this.core.writer.event(device, type, `device:${deviceId}`, { from: device.state, to: state, reason }));
        }
        return { next, events };
      });
      if (became === 'provisioned' || became === 'failed') {
        this.core.events.emit({ tenantId: stored.tenantId, type: `device.${became}`, deviceId, data: { configVersion: reply!.configVersion, pending: reply!.pending } });
      }
      return { ok: true, value: reply! };
    } catch (err) {
      return { ok: false, error: asCoded(err) };
    }
  }

  /** devices/<id>/telemetry: must be a JSON object within the size limit; nothing is stored yet. */
  telemetry(payload: Buffer): DeviceReply<undefined> {
    try {
      const value = this.#json(payload);
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ProvisioningError('SCHEMA_INVALID', 'telemetry must be a JSON object');
      return { ok: true, value: undefined };
    } catch (err) {
      return { ok: false, error: asCoded(err) };
    }
  }

  #parse<T>(payload: Buffer, validate: Validator<T>): T {
    return this.#validate(this.#json(payload), validate);
  }

  #json(payload: Buffer): unknown {
    if (payload.length > this.core.settings.maxPayloadBytes) {
      throw new ProvisioningError('PAYLOAD_TOO_LARGE', `payload of ${payload.length} bytes exceeds ${this.core.settings.maxPayloadBytes}`);
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

function certificateRecord(deviceId: string, keyFingerprint: string, issued: IssuedCert, issuedAt: string): CertificateRecord {
  return {
    serial: issued.serial,
    deviceId,
    keyFingerprint,
    pem: issued.pem,
    notBefore: issued.notBefore.toISOString(),
    notAfter: issued.notAfter.toISOString(),
    issuedAt,
    status: 'active',
  };
}

/** Certificate serials compare as lower-case hex without leading zero octets. */
export function normalizeSerial(serial: string): string {
  return serial.toLowerCase().replace(/^(00)+(?=.)/, '');
}

/** The highest config document version the device ever had (numbering never restarts). */
export function lastConfigVersion(device: DeviceRecord): number {
  return Math.max(device.config?.version ?? 0, device.lastConfigVersion ?? 0);
}

/** Re-deliver while an item was never acknowledged, or a required one failed. */
function awaitingAcknowledgement(items: readonly ConfigItemStatus[]): boolean {
  return items.some((i) => i.status === 'pending' || (i.required && i.status === 'failed'));
}

/** Claimed (or stalled while claimed) and no certificate yet: a bootstrap credential may be used. */
export function awaitingIdentity(device: DeviceRecord): boolean {
  return (device.state === 'claimed' || device.state === 'stalled') && !device.certificateSerial;
}

/** The certificate issued with a consumed credential may be fetched again until config was delivered. */
function resendWindowOpen(device: DeviceRecord, serial: string | undefined): boolean {
  const delivered = device.state !== 'identity_issued' && !(device.state === 'stalled' && !device.config?.items.some((i) => i.ackedAt));
  return !!serial && device.certificateSerial === serial && !delivered && device.state !== 'configuring';
}
