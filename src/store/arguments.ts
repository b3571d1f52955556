/**
 * Checks of a caller's arguments that every Store backend makes before it touches its data. A
 * failure is a programming error: a plain Error naming the backend, never a StoreError.
 */
import type { AuditEntry, DeviceEvent } from '../../schemas/types.js';
import type { DeviceRecord, DeviceUpdateExtras, IssuanceCommit, ProfileRecord, StoreEntry } from './types.js';

export class ArgumentChecks {
  constructor(private readonly backend: string) {}

  requireString(value: unknown, what: string): void {
    if (typeof value !== 'string' || value === '') throw new Error(`${this.backend}: ${what} must be a non-empty string`);
  }

  requireSameDevice(deviceId: string, what: string, actual: string): void {
    if (actual !== deviceId) throw new Error(`${this.backend}: ${what} is for device ${JSON.stringify(actual)}, not ${JSON.stringify(deviceId)}`);
  }

  deviceWrite(device: DeviceRecord, events: readonly DeviceEvent[]): void {
    this.requireString(device.id, 'device.id');
    this.requireString(device.tenantId, 'device.tenantId');
    if (typeof device.claimCodeHash !== 'string') throw new Error(`${this.backend}: device.claimCodeHash must be a string`);
    if (typeof device.state !== 'string') throw new Error(`${this.backend}: device.state must be a string`);
    events.forEach((e, i) => this.requireSameDevice(device.id, `events[${i}]`, e.deviceId));
  }

  /** Audit entries: the fields every backend indexes are present. */
  audit(entries: readonly AuditEntry[], what = 'audit'): void {
    entries.forEach((e, i) => {
      this.requireString(e.id, `${what}[${i}].id`);
      this.requireString(e.at, `${what}[${i}].at`);
      this.requireString(e.tenantId, `${what}[${i}].tenantId`);
      this.requireString(e.action, `${what}[${i}].action`);
      this.requireString(e.outcome, `${what}[${i}].outcome`);
      if (e.deviceId !== undefined) this.requireString(e.deviceId, `${what}[${i}].deviceId`);
    });
  }

  updateDevice(device: DeviceRecord, events: readonly DeviceEvent[], extras: DeviceUpdateExtras): void {
    this.deviceWrite(device, events);
    this.audit(extras.audit ?? [], 'extras.audit');
    if (extras.configDocument !== undefined) this.requireSameDevice(device.id, 'extras.configDocument', extras.configDocument.deviceId);
    for (const change of extras.certificates ?? []) {
      if (change.status !== 'superseded' && change.status !== 'revoked') {
        throw new Error(`${this.backend}: a certificate status change must be to 'superseded' or 'revoked', not ${JSON.stringify(change.status)}`);
      }
      this.requireString(change.serial, 'certificate change serial');
    }
  }

  commitIssuance(commit: IssuanceCommit): void {
    const { device, certificate, configDocument, consumeToken } = commit;
    this.deviceWrite(device, commit.events);
    this.audit(commit.audit ?? [], 'commit.audit');
    this.requireSameDevice(device.id, 'certificate', certificate.deviceId);
    this.requireString(certificate.serial, 'certificate.serial');
    this.requireString(certificate.keyFingerprint, 'certificate.keyFingerprint');
    if (configDocument !== undefined) this.requireSameDevice(device.id, 'configDocument', configDocument.deviceId);
    const previous = commit.previousCertificates;
    if (previous?.status === 'revoked') {
      this.requireString(previous.revokedAt, 'previousCertificates.revokedAt');
      this.requireString(previous.revocationReason, 'previousCertificates.revocationReason');
    } else if (previous !== undefined && previous.status !== 'superseded') {
      throw new Error(`${this.backend}: previousCertificates.status must be 'superseded' or 'revoked'`);
    }
    if (consumeToken !== undefined) this.requireString(consumeToken.jti, 'consumeToken.jti');
  }

  /** A batch for importEntries: each entry well-formed, everything of a device entry about that device. */
  importEntries(entries: readonly StoreEntry[]): void {
    entries.forEach((entry, i) => {
      switch (entry.kind) {
        case 'tenant':
          this.requireString(entry.tenant.id, `entries[${i}].tenant.id`);
          break;
        case 'profileVersion':
          this.profileVersion(entry.profile);
          break;
        case 'apiKey':
          this.requireString(entry.apiKey.id, `entries[${i}].apiKey.id`);
          this.requireString(entry.apiKey.tenantId, `entries[${i}].apiKey.tenantId`);
          break;
        case 'meta':
          this.requireString(entry.key, `entries[${i}].key`);
          if (typeof entry.value !== 'string') throw new Error(`${this.backend}: entries[${i}].value must be a string`);
          break;
        case 'device': {
          const { device } = entry;
          this.deviceWrite(device, entry.events);
          if (!Number.isSafeInteger(device.revision)) throw new Error(`${this.backend}: device ${device.id}: revision must be an integer`);
          entry.certificates.forEach((c, j) => {
            this.requireSameDevice(device.id, `certificates[${j}]`, c.deviceId);
            this.requireString(c.serial, 'certificate.serial');
            this.requireString(c.keyFingerprint, 'certificate.keyFingerprint');
          });
          entry.configDocuments.forEach((d, j) => {
            this.requireSameDevice(device.id, `configDocuments[${j}]`, d.deviceId);
            if (!Number.isSafeInteger(d.version)) throw new Error(`${this.backend}: configDocuments[${j}].version must be an integer`);
          });
          entry.bootstrapTokens.forEach((t, j) => {
            this.requireSameDevice(device.id, `bootstrapTokens[${j}]`, t.deviceId);
            this.requireString(t.jti, 'bootstrapToken.jti');
          });
          break;
        }
        case 'audit':
          this.audit([entry.entry], `entries[${i}].entry`);
          break;
        default:
          throw new Error(`${this.backend}: entries[${i}] has an unknown kind ${JSON.stringify((entry as { kind?: unknown }).kind)}`);
      }
    });
  }

  profileVersion(profile: ProfileRecord): void {
    this.requireString(profile.tenantId, 'profile.tenantId');
    this.requireString(profile.id, 'profile.id');
    if (!Number.isSafeInteger(profile.version) || profile.version < 1) {
      throw new Error(`${this.backend}: profile.version must be an integer >= 1, not ${String(profile.version)}`);
    }
  }
}
