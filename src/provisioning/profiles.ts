/**
 * Provisioning profiles: what "fully provisioned" means for a device type, role and tenant.
 * Every change stores a new immutable version; devices record the version they follow.
 */
import type { Ajv } from 'ajv';
import type { Clock } from '../clock.js';
import type { NetworkSettings, Profile, ProfileRequest, SecurityPolicy } from '../../schemas/types.js';
import { describeErrors, getValidator, type Validator } from '../schemas.js';
import { StoreError, type ProfileRecord, type Store } from '../store/index.js';
import type { TenantContext } from './context.js';
import { ProvisioningError } from './errors.js';

/** Every tenant has this profile from its creation: the fallback when no model default exists. */
export const DEFAULT_PROFILE_ID = 'default';
const SEMVER = /^[0-9]+\.[0-9]+\.[0-9]+$/;

export class Profiles {
  readonly #network: Validator<NetworkSettings>;
  readonly #policy: Validator<SecurityPolicy>;

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    ajv: Ajv,
    private readonly defaultPolicy: SecurityPolicy,
  ) {
    this.#network = getValidator(ajv, 'network-settings');
    this.#policy = getValidator(ajv, 'security-policy');
  }

  /** The built-in first version of a tenant's "default" profile. */
  initialDefault(tenantId: string): ProfileRecord {
    return {
      id: DEFAULT_PROFILE_ID,
      tenantId,
      version: 1,
      name: 'Default: network and security policy',
      deadlineSeconds: 86_400,
      reprovision: 'keep',
      allowExpiredRenewal: false,
      items: [
        { id: 'network', type: 'network', required: true, priority: 0, await: true, data: {} },
        { id: 'security', type: 'security-policy', required: true, priority: 10, await: false, data: { ...this.defaultPolicy } },
      ],
      createdAt: this.clock.now().toISOString(),
    };
  }

  async get(ctx: Pick<TenantContext, 'tenantId'>, id: string, version?: number): Promise<ProfileRecord> {
    const p = await this.store.getProfile(ctx.tenantId, id, version);
    if (!p) throw new ProvisioningError('PROFILE_NOT_FOUND', `no profile ${id}${version ? ` version ${version}` : ''}`);
    return p;
  }

  list(ctx: Pick<TenantContext, 'tenantId'>): Promise<ProfileRecord[]> {
    return this.store.listProfiles(ctx.tenantId);
  }

  /** The profile a claim binds: the named one, else the tenant's default for the model, else "default". */
  async resolve(tenantId: string, model: string, profileId?: string): Promise<ProfileRecord> {
    if (profileId) return this.get({ tenantId }, profileId);
    const all = await this.store.listProfiles(tenantId);
    const byModel = all.find((p) => p.defaultForModels?.includes(model));
    const chosen = byModel ?? all.find((p) => p.id === DEFAULT_PROFILE_ID);
    if (!chosen) throw new ProvisioningError('PROFILE_NOT_FOUND', `tenant ${tenantId} has no profile for model ${model}`);
    return chosen;
  }

  /** Stores the next version of profile `id` (version 1 when new). */
  async put(ctx: TenantContext, id: string, req: ProfileRequest): Promise<{ profile: ProfileRecord; previous: ProfileRecord | undefined }> {
    this.validate(req);
    for (let attempt = 0; ; attempt++) {
      const all = await this.store.listProfiles(ctx.tenantId);
      const previous = all.find((p) => p.id === id);
      for (const model of req.defaultForModels ?? []) {
        const other = all.find((p) => p.id !== id && p.defaultForModels?.includes(model));
        if (other) throw new ProvisioningError('PROFILE_INVALID', `model ${model} already defaults to profile ${other.id}`);
      }
      const profile: Profile = {
        id,
        tenantId: ctx.tenantId,
        version: (previous?.version ?? 0) + 1,
        name: req.name,
        deadlineSeconds: req.deadlineSeconds ?? 86_400,
        reprovision: req.reprovision ?? 'keep',
        allowExpiredRenewal: req.allowExpiredRenewal ?? false,
        items: req.items,
        createdAt: this.clock.now().toISOString(),
      };
      if (req.role) profile.role = req.role;
      if (req.defaultForModels?.length) profile.defaultForModels = req.defaultForModels;
      try {
        await this.store.insertProfileVersion(profile);
        return { profile, previous };
      } catch (err) {
        if (err instanceof StoreError && err.code === 'PROFILE_VERSION_EXISTS' && attempt < 5) continue;
        throw err;
      }
    }
  }

  /** Per-type checks the JSON Schema cannot express. */
  validate(req: Pick<ProfileRequest, 'items'>): void {
    const ids = new Set<string>();
    let networks = 0;
    for (const item of req.items) {
      const where = `items/${item.id}`;
      if (ids.has(item.id)) throw new ProvisioningError('PROFILE_INVALID', `${where}: duplicate item id`);
      ids.add(item.id);
      const data = item.data as Record<string, unknown>;
      if (deeperThan(data, MAX_DATA_DEPTH)) throw new ProvisioningError('PROFILE_INVALID', `${where}: data is nested deeper than ${MAX_DATA_DEPTH} levels`);
      switch (item.type) {
        case 'network': {
          networks++;
          if (Object.keys(data).length === 0) break; // filled from the claim or the service default
          if (!this.#network(data)) throw new ProvisioningError('PROFILE_INVALID', `${where}: ${describeErrors(this.#network.errors)}`);
          if ((data as NetworkSettings).wifi.secret !== undefined) {
            throw new ProvisioningError('PROFILE_INVALID', `${where}: profiles hold no Wi-Fi secret; it comes with the claim`);
          }
          break;
        }
        case 'security-policy':
          if (!this.#policy(data)) throw new ProvisioningError('PROFILE_INVALID', `${where}: ${describeErrors(this.#policy.errors)}`);
          break;
        case 'firmware-floor':
          if (typeof data.minVersion !== 'string' || !SEMVER.test(data.minVersion)) {
            throw new ProvisioningError('PROFILE_INVALID', `${where}: data.minVersion must be a version like 1.4.0`);
          }
          break;
        case 'time':
          if (typeof data.timezone !== 'string' || data.timezone.length === 0 || !isTimeZone(data.timezone)) {
            throw new ProvisioningError('PROFILE_INVALID', `${where}: data.timezone must be an IANA time zone such as Europe/Berlin`);
          }
          if (data.ntp !== undefined && (!Array.isArray(data.ntp) || data.ntp.some((h: unknown) => typeof h !== "string"))) {
            throw new ProvisioningError('PROFILE_INVALID', `${where}: data.ntp must be a list of host names`);
          }
          break;
        case 'telemetry':
          if (!Number.isInteger(data.intervalSeconds) || (data.intervalSeconds as number) < 1) {
            throw new ProvisioningError('PROFILE_INVALID', `${where}: data.intervalSeconds must be a positive integer`);
          }
          break;
        case 'custom':
          break;
      }
    }
    if (networks > 1) throw new ProvisioningError('PROFILE_INVALID', 'a profile has at most one network item');
  }
}

/**
 * Item data is stored, signed and sent as JSON, written recursively: data nested thousands of
 * levels deep (a 1 MiB body allows 200,000) would exhaust the stack there (a 5xx) instead of being
 * refused here.
 */
const MAX_DATA_DEPTH = 32;

/** Whether `value` nests deeper than `limit` levels (level by level: no recursion on its depth). */
function deeperThan(value: unknown, limit: number): boolean {
  let level: unknown[] = [value];
  for (let depth = 0; level.length > 0; depth++) {
    if (depth > limit) return true;
    level = level.flatMap((v) => (v !== null && typeof v === 'object' ? Object.values(v as object) : []));
  }
  return false;
}

function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}
