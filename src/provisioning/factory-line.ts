/**
 * In-line issuance at the production line: a station sends a batch of CSRs for registered,
 * unclaimed devices and gets their certificates back at once ("thin" devices: identity at the
 * factory, configuration in the field). Each item succeeds or fails on its own; the same CSR sent
 * again (a station retry) returns the same certificate.
 */
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import type { FactoryBundle, FactoryBundlesRequest, FactoryBundlesResult, FactoryIssueItemResult, FactoryIssueRequest, FactoryIssueResult } from '../../schemas/types.js';
import { keyFingerprint } from '../ca/index.js';
import { buildPkcs12, generateBundlePassword } from '../factory/pkcs12.js';
import { isProvisiondError } from '../errors.js';
import { StoreError } from '../store/index.js';
import type { TenantContext } from './context.js';
import { mapStoreError } from './context.js';
import { buildDocument, itemStatuses, type ProvisioningCore } from './core.js';
import { lastConfigVersion } from './service.js';
import type { DeviceRecord } from '../store/index.js';
import { ProvisioningError } from './errors.js';

export class FactoryLine {
  constructor(private readonly core: ProvisioningCore) {}

  async issue(ctx: TenantContext, req: FactoryIssueRequest): Promise<FactoryIssueResult> {
    const results: FactoryIssueItemResult[] = [];
    for (const item of req.devices) {
      try {
        results.push(await this.#fromCsr(ctx, item.deviceId, item.csr, req.baseline === true));
      } catch (err) {
        await this.core.audit.record(this.core.audit.failure({ tenantId: ctx.tenantId, actor: ctx.actor, action: 'certificate.issue', deviceId: item.deviceId, details: { channel: 'factory' } }, err));
        if (!isProvisiondError(err)) throw err;
        results.push({ deviceId: item.deviceId, status: 'failed', code: err.code, message: err.message });
      }
    }
    const count = (s: FactoryIssueItemResult['status']) => results.filter((r) => r.status === s).length;
    return { chain: [...this.core.issuer.chainPems], issued: count('issued'), unchanged: count('unchanged'), failed: count('failed'), results };
  }

  /**
   * Server-side key generation, for devices that cannot make keys (only when the tenant enables
   * it): a key pair per device, its certificate, and a PKCS#12 bundle under a fresh password. The
   * service keeps neither the key nor the password.
   */
  async bundles(ctx: TenantContext, req: FactoryBundlesRequest): Promise<FactoryBundlesResult> {
    const tenant = await this.core.store.getTenant(ctx.tenantId);
    if (!tenant?.serverKeyGeneration) {
      const err = new ProvisioningError('SERVER_KEYGEN_DISABLED', `tenant ${ctx.tenantId} does not allow server-side key generation (PATCH /v1/tenant {"serverKeyGeneration": true})`);
      await this.core.audit.record(this.core.audit.failure({ tenantId: ctx.tenantId, actor: ctx.actor, action: 'key.generate', details: { channel: 'factory', devices: req.devices.length } }, err));
      throw err;
    }
    const results: FactoryBundle[] = [];
    for (const deviceId of req.devices) {
      try {
        const { privateKey, publicKey } =
          req.keyType === 'RSA-2048' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const spkiDer = publicKey.export({ type: 'spki', format: 'der' });
        const issued = await this.#one(ctx, deviceId, { spkiDer, keyFingerprint: keyFingerprint(spkiDer) }, 'server-side key generation', false, req.keyType ?? 'P-256');
        const password = generateBundlePassword();
        const pkcs12 = buildPkcs12({
          keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
          certPem: issued.certificate!,
          chainPems: this.core.issuer.chainPems,
          password,
          friendlyName: deviceId,
        });
        results.push({ deviceId, status: 'issued', pkcs12: pkcs12.toString('base64'), password, serial: issued.serial!, notAfter: issued.notAfter! });
      } catch (err) {
        await this.core.audit.record(
          this.core.audit.failure({ tenantId: ctx.tenantId, actor: ctx.actor, action: 'certificate.issue', deviceId, details: { channel: 'factory', serverKeyGeneration: true } }, err),
        );
        if (!isProvisiondError(err)) throw err;
        results.push({ deviceId, status: 'failed', code: err.code, message: err.message });
      }
    }
    return { results };
  }

  async #fromCsr(ctx: TenantContext, deviceId: string, csrPem: string, baseline: boolean): Promise<FactoryIssueItemResult> {
    return this.#one(ctx, deviceId, this.core.issuer.parseCsr(csrPem), baseline ? 'factory line, pre-provisioned' : 'factory line', baseline);
  }

  async #one(
    ctx: TenantContext,
    deviceId: string,
    key: { spkiDer: Buffer; keyFingerprint: string; publicKey?: KeyObject },
    how: string,
    baseline = false,
    /** Server-side key generation: the key's type (a key.generate audit entry goes with the issuance). */
    generatedKeyType?: string,
  ): Promise<FactoryIssueItemResult> {
    const { store, writer, issuer } = this.core;
    for (let attempt = 0; ; attempt++) {
      const device = await writer.load(deviceId, ctx.tenantId);
      if (device.state !== 'registered') {
        throw new ProvisioningError('DEVICE_STATE_INVALID', `factory issuance is for registered devices; ${deviceId} is ${device.state}`);
      }
      const other = await store.findCertificateByKey(key.keyFingerprint);
      if (other && other.deviceId !== deviceId) throw new ProvisioningError('KEY_IN_USE');
      if (device.certificateSerial) {
        const current = await store.getCertificate(device.certificateSerial);
        if (current?.status === 'active' && current.keyFingerprint === key.keyFingerprint) {
          const doc = baseline && device.config ? await store.getConfigDocument(deviceId, device.config.version) : undefined;
          if (baseline && !doc) throw new ProvisioningError('DEVICE_STATE_INVALID', `${deviceId} already has a factory identity without a baseline configuration`);
          return { deviceId, status: 'unchanged', certificate: current.pem, serial: current.serial, notAfter: current.notAfter, ...(doc ? { baselineConfig: doc.jws } : {}) };
        }
      }
      const issued = issuer.issueDevice({ deviceId, spkiDer: key.spkiDer });
      const now = writer.now();
      const certificate = {
        serial: issued.serial,
        deviceId,
        keyFingerprint: key.keyFingerprint,
        pem: issued.pem,
        notBefore: issued.notBefore.toISOString(),
        notAfter: issued.notAfter.toISOString(),
        issuedAt: now,
        status: 'active' as const,
      };
      const next: DeviceRecord = { ...device, certificateSerial: issued.serial, certificateNotAfter: certificate.notAfter, identityIssuedAt: now, updatedAt: now };
      let built: Awaited<ReturnType<typeof buildDocument>> | undefined;
      if (baseline) {
        // the baseline: the tenant's profile for the model, no site network; the station flashes it
        // and vouches for it, so its items are recorded as applied
        const profile = await this.core.profiles.resolve(device.tenantId, device.model);
        const version = lastConfigVersion(device) + 1;
        built = await buildDocument(this.core, device, profile, version, { publicKey: key.publicKey ?? createPublicKey({ key: key.spkiDer, format: 'der', type: 'spki' }) }, { withoutNetwork: true });
        next.profileId = profile.id;
        next.profileVersion = profile.version;
        next.config = { version, items: itemStatuses(built.doc).map((i) => ({ ...i, status: 'applied' as const, ackedAt: now })) };
        next.lastConfigVersion = version;
      }
      try {
        await store.commitIssuance({
          device: next,
          expectedRevision: device.revision,
          events: [writer.event(device, 'identity_issued', ctx.actor, { reason: `${how}: certificate ${issued.serial}${built ? `, baseline config version ${built.record.version}` : ''}` })],
          certificate,
          ...(built ? { configDocument: built.record } : {}),
          // a line rework with a new key: the previous factory key is presumed destroyed
          previousCertificates: { status: 'revoked', revokedAt: now, revocationReason: 'superseded' },
          audit: [
            ...(generatedKeyType
              ? [
                  this.core.audit.entry({
                    tenantId: device.tenantId,
                    actor: ctx.actor,
                    action: 'key.generate',
                    deviceId,
                    details: { channel: 'factory', keyType: generatedKeyType, keyFingerprint: key.keyFingerprint, kept: false },
                  }),
                ]
              : []),
            this.core.audit.entry({
              tenantId: device.tenantId,
              actor: ctx.actor,
              action: 'certificate.issue',
              deviceId,
              serial: issued.serial,
              details: { channel: 'factory', how, keyFingerprint: key.keyFingerprint, ...(device.certificateSerial ? { replaces: device.certificateSerial } : {}), ...(built ? { baselineConfigVersion: built.record.version } : {}) },
            }),
          ],
        });
        return { deviceId, status: 'issued', certificate: issued.pem, serial: issued.serial, notAfter: certificate.notAfter, ...(built ? { baselineConfig: built.record.jws } : {}) };
      } catch (err) {
        const code = err instanceof StoreError ? err.code : undefined;
        if ((code === 'SERIAL_EXISTS' || code === 'REVISION_CONFLICT') && attempt < 5) continue;
        throw mapStoreError(err);
      }
    }
  }
}
