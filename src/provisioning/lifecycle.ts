/**
 * Operator actions on a device's lifecycle, and the time-driven ones: release (within the
 * provisional window, or by an admin), revoke, decommission, re-provision after a factory reset,
 * push config again, ask to renew, roll out a new profile version, and stall detection. Each is
 * one compare-and-set of the device record with its certificate changes and events, followed by
 * what the device must be told.
 */
import type { ClaimResponse, Device, DeviceState, MqttCommand } from '../../schemas/types.js';
import { ACTIVE_STATES, PENDING_STATES, assertTransition } from '../policy/index.js';
import type { CertificateStatusChange, DeviceRecord, ProfileRecord } from '../store/index.js';
import { auditFailures, type TenantContext } from './context.js';
import { buildDocument, currentPublicKey, itemStatuses, pendingRequired, type ProvisioningCore } from './core.js';
import { ProvisioningError } from './errors.js';
import { awaitingIdentity, lastConfigVersion, toDeviceView, type ProvisioningService } from './service.js';

type Reason = 'unspecified' | 'keyCompromise' | 'affiliationChanged' | 'superseded' | 'cessationOfOperation';

export class Lifecycle {
  constructor(
    private readonly core: ProvisioningCore,
    private readonly service: ProvisioningService,
  ) {}

  /**
   * Give the device back: its certificate is revoked, it is told to wipe, and it returns to the
   * unclaimed pool. Within the tenant's provisional window an installer may do it; after, only an
   * admin.
   */
  async release(ctx: TenantContext, deviceId: string, reason = 'released by its owner'): Promise<Device> {
    return auditFailures(this.core.audit, { tenantId: ctx.tenantId, actor: ctx.actor, action: 'device.release', deviceId }, () => this.#release(ctx, deviceId, reason));
  }

  async #release(ctx: TenantContext, deviceId: string, reason: string): Promise<Device> {
    const now = this.core.clock.now();
    const stored = await this.core.writer.mutate(deviceId, ctx.tenantId, (device) => {
      if (!ACTIVE_STATES.includes(device.state)) throw new ProvisioningError('DEVICE_STATE_INVALID', `a ${device.state} device cannot be released`);
      if (ctx.role !== 'admin' && device.provisionalUntil && Date.parse(device.provisionalUntil) <= now.getTime()) {
        throw new ProvisioningError('RELEASE_WINDOW_CLOSED', `the provisional window ended ${device.provisionalUntil}; only an admin can release ${deviceId} now`);
      }
      return this.#endIdentity(ctx, device, 'released', reason, 'affiliationChanged', {
        releasedAt: now.toISOString(),
        dropOwnership: true,
      });
    });
    await this.#tellToWipe(deviceId, reason);
    this.core.events.emit({ tenantId: stored.tenantId, type: 'device.released', deviceId, data: { reason } });
    return toDeviceView(stored);
  }

  /** The identity is revoked at once: live connections drop, the certificate is refused after. */
  async revoke(ctx: TenantContext, deviceId: string, reason = 'revoked by an admin'): Promise<Device> {
    return auditFailures(this.core.audit, { tenantId: ctx.tenantId, actor: ctx.actor, action: 'device.revoke', deviceId }, () => this.#revoke(ctx, deviceId, reason));
  }

  async #revoke(ctx: TenantContext, deviceId: string, reason: string): Promise<Device> {
    const stored = await this.core.writer.mutate(deviceId, ctx.tenantId, (device) => {
      if (!ACTIVE_STATES.includes(device.state) || device.state === 'claimed') {
        throw new ProvisioningError('DEVICE_STATE_INVALID', `a ${device.state} device has no identity to revoke`);
      }
      return this.#endIdentity(ctx, device, 'revoked', reason, 'keyCompromise', { revokedAt: this.core.writer.now() });
    });
    this.core.gateway.disconnect(deviceId);
    this.core.events.emit({ tenantId: stored.tenantId, type: 'device.revoked', deviceId, data: { reason } });
    return toDeviceView(stored);
  }

  /** Out of service for good: identity revoked, configuration withdrawn, the record kept for audit. */
  async decommission(ctx: TenantContext, deviceId: string, reason = 'decommissioned'): Promise<Device> {
    return auditFailures(this.core.audit, { tenantId: ctx.tenantId, actor: ctx.actor, action: 'device.decommission', deviceId }, () => this.#decommission(ctx, deviceId, reason));
  }

  async #decommission(ctx: TenantContext, deviceId: string, reason: string): Promise<Device> {
    const stored = await this.core.writer.mutate(deviceId, ctx.tenantId, (device) => {
      if (device.state === 'decommissioned') return undefined;
      return this.#endIdentity(ctx, device, 'decommissioned', reason, 'cessationOfOperation', { decommissionedAt: this.core.writer.now() });
    });
    await this.#tellToWipe(deviceId, reason);
    this.core.events.emit({ tenantId: stored.tenantId, type: 'device.decommissioned', deviceId, data: { reason } });
    return toDeviceView(stored);
  }

  /**
   * After a factory reset the device has lost its key: a new bootstrap credential, per the
   * profile's policy. keep: same profile version, config history kept (the next document
   * continues the numbering); reset: back to the latest profile version, a new deadline;
   * refuse: REPROVISION_REFUSED. The old certificate is revoked now.
   */
  async reprovision(ctx: TenantContext, deviceId: string): Promise<ClaimResponse> {
    return auditFailures(this.core.audit, { tenantId: ctx.tenantId, actor: ctx.actor, action: 'device.reprovision', deviceId }, () => this.#reprovision(ctx, deviceId));
  }

  async #reprovision(ctx: TenantContext, deviceId: string): Promise<ClaimResponse> {
    const device = await this.core.writer.load(deviceId, ctx.tenantId);
    if (!ACTIVE_STATES.includes(device.state) || awaitingIdentity(device)) {
      throw new ProvisioningError('DEVICE_STATE_INVALID', `a ${device.state} device without identity is not re-provisioned; ${awaitingIdentity(device) ? 'issue a new bootstrap credential instead' : 'claim it'}`);
    }
    const current = await this.#profile(device);
    if (current.reprovision === 'refuse') throw new ProvisioningError('REPROVISION_REFUSED', `profile ${current.id} refuses re-provisioning`);
    const latest = current.reprovision === 'reset' ? ((await this.core.store.getProfile(device.tenantId, current.id)) ?? current) : current;
    const issued = await this.service.newBootstrap(deviceId);
    const now = this.core.clock.now();
    const stored = await this.core.writer.mutate(deviceId, ctx.tenantId, (d) => {
      if (!ACTIVE_STATES.includes(d.state) || awaitingIdentity(d)) throw new ProvisioningError('DEVICE_STATE_INVALID', `device is ${d.state}`);
      assertTransition(d.state, 'claimed');
      // working towards provisioned again: a new deadline (keep and reset alike)
      const next: DeviceRecord = {
        ...d,
        state: 'claimed',
        bootstrapJti: issued.jti,
        profileVersion: latest.version,
        deadlineAt: new Date(now.getTime() + latest.deadlineSeconds * 1000).toISOString(),
        lastConfigVersion: lastConfigVersion(d),
      };
      for (const k of ['certificateSerial', 'certificateNotAfter', 'certificateConfirmedAt', 'previousCertificateSerial', 'identityIssuedAt', 'provisionedAt', 'stalledAt'] as const) delete next[k];
      if (current.reprovision === 'reset') delete next.config;
      return {
        next,
        events: [this.core.writer.event(d, 'reprovisioning', ctx.actor, { from: d.state, to: 'claimed', reason: `factory reset; policy ${current.reprovision}` })],
        extras: {
          certificates: this.#revokeAll(d, 'superseded'),
          audit: [
            this.core.audit.entry({
              tenantId: d.tenantId,
              actor: ctx.actor,
              action: 'device.reprovision',
              deviceId,
              ...(d.certificateSerial ? { serial: d.certificateSerial } : {}),
              details: { policy: current.reprovision, revoked: this.#revokeAll(d, 'superseded').map((c) => c.serial).join(' '), bootstrapJti: issued.jti },
            }),
          ],
        },
      };
    });
    this.core.gateway.disconnect(deviceId);
    return { device: toDeviceView(stored), bootstrap: this.service.bootstrapView(deviceId, issued) };
  }

  /** Publish the current config document again (a device that is connected gets it now). */
  async pushConfig(ctx: TenantContext, deviceId: string): Promise<Device> {
    const device = await this.core.writer.load(deviceId, ctx.tenantId);
    const doc = device.config ? await this.core.store.getConfigDocument(deviceId, device.config.version) : undefined;
    if (!doc) throw new ProvisioningError('DEVICE_STATE_INVALID', `device ${deviceId} has no configuration yet`);
    await this.core.gateway.send(deviceId, 'config', doc.jws, device.hubId);
    return toDeviceView(device);
  }

  /** Ask the device to renew its certificate now (devices/<id>/commands). */
  async requestRenewal(ctx: TenantContext, deviceId: string): Promise<Device> {
    const device = await this.core.writer.load(deviceId, ctx.tenantId);
    if (!device.certificateSerial) throw new ProvisioningError('DEVICE_STATE_INVALID', `device ${deviceId} has no certificate to renew`);
    await this.#command(deviceId, 'renew', 'requested by an admin');
    return toDeviceView(device);
  }

  /**
   * A new profile version: every device following the profile gets a new config document in
   * which the changed items are pending again; unchanged items keep their status. A provisioned
   * device with a changed required item goes back to configuring with a new deadline.
   */
  async rollOut(profile: ProfileRecord, previous: ProfileRecord | undefined): Promise<{ updated: number }> {
    let updated = 0;
    let after: string | undefined;
    for (;;) {
      const page = await this.core.store.listDevices({ tenantId: profile.tenantId, profileId: profile.id, states: ACTIVE_STATES, after, limit: 200 });
      if (page.length === 0) break;
      after = page[page.length - 1]!.id;
      for (const listed of page) {
        if (!listed.certificateSerial) {
          // no identity yet: the first document will be built from the new version
          await this.core.writer.mutate(listed.id, profile.tenantId, (d) =>
            d.certificateSerial || d.profileVersion === profile.version ? undefined : { next: { ...d, profileVersion: profile.version }, events: [] },
          );
          continue;
        }
        let jws: string | undefined;
        await this.core.writer.mutate(listed.id, profile.tenantId, async (d) => {
          jws = undefined;
          if (!d.certificateSerial || d.profileVersion === profile.version || !ACTIVE_STATES.includes(d.state)) return undefined;
          const version = lastConfigVersion(d) + 1;
          const built = await buildDocument(this.core, d, profile, version, await currentPublicKey(this.core, d));
          const items = itemStatuses(built.doc, { previous, current: profile, statuses: d.config?.items ?? [] });
          const pending = pendingRequired(items);
          let state: DeviceState = d.state;
          if (pending.length === 0) state = d.state === 'stalled' || d.state === 'failed' || d.state === 'configuring' ? 'provisioned' : d.state;
          else if (d.state === 'provisioned' || d.state === 'failed') state = 'configuring';
          if (state !== d.state) assertTransition(d.state, state);
          const now = this.core.clock.now();
          const next: DeviceRecord = { ...d, state, profileVersion: profile.version, config: { version, items }, lastConfigVersion: version };
          if (state === 'configuring' && d.state === 'provisioned') next.deadlineAt = new Date(now.getTime() + profile.deadlineSeconds * 1000).toISOString();
          if (state === 'provisioned' && d.state !== 'provisioned') next.provisionedAt = now.toISOString();
          jws = built.record.jws;
          return {
            next,
            events: [
              this.core.writer.event(d, 'config_updated', 'system', {
                ...(state !== d.state ? { from: d.state, to: state } : {}),
                reason: `profile ${profile.id} v${profile.version}: config version ${version}, pending ${pending.join(', ') || 'none'}`,
              }),
            ],
            extras: { configDocument: built.record },
          };
        });
        if (jws) {
          updated++;
          await this.core.gateway.send(listed.id, 'config', jws, listed.hubId);
        }
      }
    }
    return { updated };
  }

  /** Devices past their deadline and not provisioned become stalled; an alert goes out for each. */
  async scanStalls(): Promise<{ stalled: string[] }> {
    const now = this.core.writer.now();
    const stalled: string[] = [];
    for (;;) {
      const due = await this.core.store.listDevices({ states: PENDING_STATES, deadlineBefore: now, limit: 200 });
      if (due.length === 0) break;
      for (const listed of due) {
        let missing: string[] = [];
        // Set by the attempt that wrote: several instances scan the same devices, and only the one
        // whose compare-and-set won reports the stall.
        let wrote = false;
        const stored = await this.core.writer.mutate(listed.id, undefined, (d) => {
          wrote = false;
          if (!PENDING_STATES.includes(d.state) || !d.deadlineAt || d.deadlineAt >= now) return undefined;
          assertTransition(d.state, 'stalled');
          wrote = true;
          missing = [...(d.certificateSerial ? [] : ['identity']), ...pendingRequired(d.config?.items ?? [])];
          return {
            next: { ...d, state: 'stalled', stalledAt: now },
            events: [this.core.writer.event(d, 'stalled', 'system', { from: d.state, to: 'stalled', reason: `deadline ${d.deadlineAt} passed; missing: ${missing.join(', ')}` })],
          };
        });
        if (wrote) {
          stalled.push(stored.id);
          this.core.events.emit({
            tenantId: stored.tenantId,
            type: 'device.stalled',
            deviceId: stored.id,
            data: { model: stored.model, site: stored.site, profileId: stored.profileId, deadlineAt: stored.deadlineAt, missing },
          });
        }
      }
    }
    return { stalled };
  }

  /** The CRL of every revoked certificate still within its validity. */
  async crl(): Promise<Buffer> {
    const now = this.core.clock.now();
    const revoked = await this.core.store.listRevokedCertificates(now.toISOString());
    return this.core.issuer.crl({
      revoked: revoked.map((c) => ({ serial: c.serial, revokedAt: new Date(c.revokedAt ?? c.issuedAt), reason: (c.revocationReason ?? 'unspecified') as Reason })),
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + 86_400_000),
      crlNumber: BigInt(now.getTime()),
    });
  }

  // ------------------------------------------------------------------------

  #endIdentity(
    ctx: TenantContext,
    device: DeviceRecord,
    to: 'released' | 'revoked' | 'decommissioned',
    reason: string,
    crlReason: Reason,
    stamp: Partial<DeviceRecord> & { dropOwnership?: boolean },
  ) {
    assertTransition(device.state, to);
    const { dropOwnership, ...fields } = stamp;
    const next: DeviceRecord = { ...device, ...fields, state: to, lastConfigVersion: lastConfigVersion(device) };
    for (const k of ['bootstrapJti', 'previousCertificateSerial', 'certificateConfirmedAt'] as const) delete next[k];
    if (to !== 'revoked') delete next.config; // configuration withdrawn
    if (dropOwnership) for (const k of ['owner', 'site', 'network', 'profileId', 'profileVersion', 'deadlineAt', 'provisionalUntil', 'certificateSerial', 'certificateNotAfter'] as const) delete next[k];
    const certificates = this.#revokeAll(device, crlReason);
    const action = to === 'released' ? 'device.release' : to === 'revoked' ? 'device.revoke' : 'device.decommission';
    return {
      next,
      events: [this.core.writer.event(device, to, ctx.actor, { from: device.state, to, reason })],
      extras: {
        certificates,
        audit: [
          this.core.audit.entry({
            tenantId: device.tenantId,
            actor: ctx.actor,
            action,
            deviceId: device.id,
            ...(device.certificateSerial ? { serial: device.certificateSerial } : {}),
            details: { reason, from: device.state, revoked: certificates.map((c) => c.serial).join(' '), crlReason },
          }),
        ],
      },
    };
  }

  /** The device's usable certificates, revoked: the current one and a replaced one still in its grace period. */
  #revokeAll(device: DeviceRecord, reason: Reason): CertificateStatusChange[] {
    const serials = [device.certificateSerial, device.certificateConfirmedAt ? undefined : device.previousCertificateSerial].filter((x): x is string => !!x);
    return serials.map((serial) => ({ serial, status: 'revoked', revokedAt: this.core.writer.now(), revocationReason: reason }));
  }

  async #tellToWipe(deviceId: string, reason: string): Promise<void> {
    await this.#command(deviceId, 'wipe', reason);
    this.core.gateway.disconnect(deviceId, 1000); // its certificate is already refused for new connections
  }

  async #command(deviceId: string, command: MqttCommand['command'], reason: string): Promise<void> {
    const body: MqttCommand = { command, reason, issuedAt: this.core.writer.now() };
    await this.core.gateway.send(deviceId, 'commands', JSON.stringify(body));
  }

  async #profile(device: DeviceRecord): Promise<ProfileRecord> {
    if (!device.profileId) return this.core.profiles.resolve(device.tenantId, device.model);
    const p = await this.core.store.getProfile(device.tenantId, device.profileId, device.profileVersion);
    if (!p) throw new ProvisioningError('PROFILE_NOT_FOUND', `device ${device.id} has no profile`);
    return p;
  }
}
