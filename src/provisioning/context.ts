/**
 * What the provisioning use-cases share: who is asking (tenant, actor, role), the ports to the
 * outside (device gateway, event sink), and DeviceWriter, the one way a device record changes:
 * load, decide, compare-and-set, retry on a concurrent change.
 */
import type { AuditInput, AuditTrail } from '../audit/index.js';
import type { Clock } from '../clock.js';
import { isProvisiondError } from '../errors.js';
import type { DeviceEvent, Role } from '../../schemas/types.js';
import { StoreError, type DeviceRecord, type DeviceUpdateExtras, type Store } from '../store/index.js';
import { ProvisioningError } from './errors.js';

/** Who asks: every API call runs for one tenant. */
export interface TenantContext {
  tenantId: string;
  /** "apikey:<id>", "device:<id>" or "system". */
  actor: string;
  role: Role;
}

/** Reaching devices, implemented by the broker. Calls for devices that are offline do nothing. */
export interface DeviceGateway {
  /**
   * Publishes QoS 1 on devices/<id>/<leaf>; for a device behind a hub (`hubId`), on the hub's
   * relay topic devices/<hub>/children/<id>/<leaf> instead (config, state, errors; a relayed
   * child has no commands topic).
   */
  send(
    deviceId: string,
    leaf: 'config' | 'state' | 'errors' | 'commands' | 'csr/accepted' | 'csr/rejected',
    payload: string,
    hubId?: string,
  ): Promise<void>;
  /** Closes the device's live connections, now or after `afterMs` (to let a last message go out). */
  disconnect(deviceId: string, afterMs?: number): void;
}

/** Where service events go (SSE stream, webhooks, metrics). */
export interface EventSink {
  emit(event: { tenantId: string; type: string; deviceId?: string; data: Record<string, unknown> }): void;
}

export const nullGateway: DeviceGateway = { send: async () => undefined, disconnect: () => undefined };
export const nullSink: EventSink = { emit: () => undefined };

export interface Mutation {
  next: DeviceRecord;
  events: DeviceEvent[];
  extras?: DeviceUpdateExtras;
}

const MAX_CAS_RETRIES = 8;

export class DeviceWriter {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
  ) {}

  now(): string {
    return this.clock.now().toISOString();
  }

  event(device: Pick<DeviceRecord, 'id' | 'tenantId'>, type: DeviceEvent['type'], actor: string, extra: Partial<DeviceEvent> = {}): DeviceEvent {
    return { deviceId: device.id, tenantId: device.tenantId, at: this.now(), type, actor, ...extra };
  }

  /** The device, or DEVICE_NOT_FOUND (also when it belongs to another tenant: no existence oracle). */
  async load(id: string, tenantId?: string): Promise<DeviceRecord> {
    const rec = await this.store.getDevice(id);
    if (!rec || (tenantId !== undefined && rec.tenantId !== tenantId)) throw new ProvisioningError('DEVICE_NOT_FOUND', `no device ${id}`);
    return rec;
  }

  /**
   * Applies `decide` to the current record and writes the result with compare-and-set, re-reading
   * and deciding again when the device changed meanwhile. `decide` returns undefined for "no
   * change" (the current record is returned) and throws coded errors to refuse.
   */
  async mutate(id: string, tenantId: string | undefined, decide: (device: DeviceRecord) => Promise<Mutation | undefined> | Mutation | undefined): Promise<DeviceRecord> {
    for (let attempt = 0; ; attempt++) {
      const device = await this.load(id, tenantId);
      const m = await decide(device);
      if (!m) return device;
      try {
        return await this.store.updateDevice({ ...m.next, updatedAt: this.now() }, device.revision, m.events, m.extras);
      } catch (err) {
        if (err instanceof StoreError && err.code === 'REVISION_CONFLICT' && attempt < MAX_CAS_RETRIES) continue;
        throw mapStoreError(err);
      }
    }
  }
}

/** Store errors a client can cause become provisioning errors with the same meaning. */
export function mapStoreError(err: unknown): unknown {
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
    case 'CONFIG_VERSION_EXISTS':
    case 'PROFILE_VERSION_EXISTS':
      return new ProvisioningError('ISSUANCE_CONFLICT', undefined, { cause: err });
    default:
      return err;
  }
}

/**
 * Runs an identity action; when it is refused (throws), its failure entry (the error code the
 * caller gets) is appended to the audit log before the error goes on. The success entry is the
 * action's own business: it goes into the action's store transaction.
 */
export async function auditFailures<T>(
  audit: AuditTrail,
  about: Omit<AuditInput, 'outcome' | 'errorCode'> | (() => Omit<AuditInput, 'outcome' | 'errorCode'>),
  run: () => Promise<T>,
): Promise<T> {
  try {
    return await run();
  } catch (err) {
    await audit.record(audit.failure(typeof about === 'function' ? about() : about, err));
    throw err;
  }
}

/** Coded errors pass; anything else is a bug and is re-thrown. */
export function asCoded(err: unknown): Error & { code: string } {
  if (isProvisiondError(err)) return err;
  throw err;
}

/** Forwards to the broker once it exists (the broker is built after the use-cases it calls). */
export class GatewayRelay implements DeviceGateway {
  target: DeviceGateway = nullGateway;
  send(deviceId: string, leaf: Parameters<DeviceGateway['send']>[1], payload: string, hubId?: string): Promise<void> {
    return this.target.send(deviceId, leaf, payload, hubId);
  }
  disconnect(deviceId: string, afterMs?: number): void {
    this.target.disconnect(deviceId, afterMs);
  }
}
