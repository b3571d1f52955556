/**
 * In-line issuance at the production line: a station sends a batch of CSRs for registered,
 * unclaimed devices and gets their certificates back at once ("thin" devices: identity at the
 * factory, configuration in the field). Each item succeeds or fails on its own; the same CSR sent
 * again (a station retry) returns the same certificate.
 */
import type { FactoryIssueItemResult, FactoryIssueRequest, FactoryIssueResult } from '../../schemas/types.js';
import { isProvisiondError } from '../errors.js';
import { StoreError } from '../store/index.js';
import type { TenantContext } from './context.js';
import { mapStoreError } from './context.js';
import type { ProvisioningCore } from './core.js';
import { ProvisioningError } from './errors.js';

export class FactoryLine {
  constructor(private readonly core: ProvisioningCore) {}

  async issue(ctx: TenantContext, req: FactoryIssueRequest): Promise<FactoryIssueResult> {
    const results: FactoryIssueItemResult[] = [];
    for (const item of req.devices) {
      try {
        results.push(await this.#one(ctx, item.deviceId, item.csr));
      } catch (err) {
        if (!isProvisiondError(err)) throw err;
        results.push({ deviceId: item.deviceId, status: 'failed', code: err.code, message: err.message });
      }
    }
    const count = (s: FactoryIssueItemResult['status']) => results.filter((r) => r.status === s).length;
    return { chain: [...this.core.issuer.chainPems], issued: count('issued'), unchanged: count('unchanged'), failed: count('failed'), results };
  }

  async #one(ctx: TenantContext, deviceId: string, csrPem: string): Promise<FactoryIssueItemResult> {
    const { store, writer, issuer } = this.core;
    const csr = issuer.parseCsr(csrPem);
    for (let attempt = 0; ; attempt++) {
      const device = await writer.load(deviceId, ctx.tenantId);
      if (device.state !== 'registered') {
        throw new ProvisioningError('DEVICE_STATE_INVALID', `factory issuance is for registered devices; ${deviceId} is ${device.state}`);
      }
      const other = await store.findCertificateByKey(csr.keyFingerprint);
      if (other && other.deviceId !== deviceId) throw new ProvisioningError('KEY_IN_USE');
      if (device.certificateSerial) {
        const current = await store.getCertificate(device.certificateSerial);
        if (current?.status === 'active' && current.keyFingerprint === csr.keyFingerprint) {
          return { deviceId, status: 'unchanged', certificate: current.pem, serial: current.serial, notAfter: current.notAfter };
        }
      }
      const issued = issuer.issueDevice({ deviceId, spkiDer: csr.spkiDer });
      const now = writer.now();
      const certificate = {
        serial: issued.serial,
        deviceId,
        keyFingerprint: csr.keyFingerprint,
        pem: issued.pem,
        notBefore: issued.notBefore.toISOString(),
        notAfter: issued.notAfter.toISOString(),
        issuedAt: now,
        status: 'active' as const,
      };
      try {
        await store.commitIssuance({
          device: { ...device, certificateSerial: issued.serial, certificateNotAfter: certificate.notAfter, identityIssuedAt: now, updatedAt: now },
          expectedRevision: device.revision,
          events: [writer.event(device, 'identity_issued', ctx.actor, { reason: `factory line: certificate ${issued.serial}` })],
          certificate,
          // a line rework with a new key: the previous factory key is presumed destroyed
          previousCertificates: { status: 'revoked', revokedAt: now, revocationReason: 'superseded' },
        });
        return { deviceId, status: 'issued', certificate: issued.pem, serial: issued.serial, notAfter: certificate.notAfter };
      } catch (err) {
        const code = err instanceof StoreError ? err.code : undefined;
        if ((code === 'SERIAL_EXISTS' || code === 'REVISION_CONFLICT') && attempt < 5) continue;
        throw mapStoreError(err);
      }
    }
  }
}
