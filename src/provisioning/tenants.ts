/**
 * Tenants: every device, profile, API key and report belongs to one. The service tenant
 * ("default", created at first start) is where operators of the service live; its admins create
 * the other tenants, each with a first admin key and a "default" profile.
 */
import { validateWebhookUrl } from '../alerts/index.js';
import type { Clock } from '../clock.js';
import { X509Certificate } from 'node:crypto';
import type { ApiKey, ManufacturerCaRequest, Tenant, TenantCreateRequest, TenantUpdateRequest } from '../../schemas/types.js';
import { SERVICE_TENANT } from '../policy/index.js';
import { StoreError, type Store, type TenantRecord } from '../store/index.js';
import type { ApiKeys } from './api-keys.js';
import type { TenantContext } from './context.js';
import { ProvisioningError } from './errors.js';
import type { Profiles } from './profiles.js';
import type { SecretBox } from './secret-box.js';

/** What the API shows of a tenant: the webhook secret is write-only. */
export function toTenantView(t: TenantRecord): Tenant {
  const view: Tenant = { ...t };
  if (t.webhook?.secret) view.webhook = { url: t.webhook.url };
  if (t.preprovisionWebhook?.secret) {
    const { secret: _s, ...rest } = t.preprovisionWebhook;
    view.preprovisionWebhook = rest;
  }
  return view;
}

export class Tenants {
  constructor(
    private readonly store: Store,
    private readonly apiKeys: ApiKeys,
    private readonly profiles: Profiles,
    private readonly clock: Clock,
    private readonly defaults: { provisionalWindowDays: number },
    private readonly box: SecretBox,
  ) {}

  /** The tenant's webhook with its secret opened, for delivery (never for the API). */
  async webhookOf(tenantId: string): Promise<{ url: string; secret?: string } | undefined> {
    const hook = (await this.store.getTenant(tenantId))?.webhook;
    if (!hook) return undefined;
    return hook.secret ? { url: hook.url, secret: this.box.open(hook.secret, `webhook:${tenantId}`) } : { url: hook.url };
  }

  /** Webhook secrets are stored sealed (AES-256-GCM under the data-directory key). */
  #sealed(tenantId: string, hook: NonNullable<TenantRecord['webhook']>): NonNullable<TenantRecord['webhook']> {
    return hook.secret ? { url: hook.url, secret: this.box.seal(hook.secret, `webhook:${tenantId}`) } : { url: hook.url };
  }

  /** First start: the service tenant and its default profile. */
  async ensureServiceTenant(): Promise<void> {
    if (await this.store.getTenant(SERVICE_TENANT)) return;
    await this.#insert({ id: SERVICE_TENANT, name: 'Service operators', provisionalWindowDays: this.defaults.provisionalWindowDays });
  }

  async create(ctx: TenantContext, req: TenantCreateRequest): Promise<{ tenant: Tenant; adminKey: ApiKey & { secret: string } }> {
    if (ctx.tenantId !== SERVICE_TENANT) throw new ProvisioningError('ROLE_FORBIDDEN', 'only admins of the service tenant create tenants');
    if (req.webhook) validateWebhookUrl(req.webhook.url);
    const tenant = await this.#insert({
      id: req.id,
      name: req.name,
      provisionalWindowDays: req.provisionalWindowDays ?? this.defaults.provisionalWindowDays,
      ...(req.webhook ? { webhook: this.#sealed(req.id, req.webhook) } : {}),
      ...(req.serverKeyGeneration !== undefined ? { serverKeyGeneration: req.serverKeyGeneration } : {}),
    });
    const adminKey = await this.apiKeys.create(tenant.id, `first admin key of ${tenant.id}`, 'admin', ctx.actor);
    return { tenant: toTenantView(tenant), adminKey };
  }

  async get(tenantId: string): Promise<TenantRecord> {
    const t = await this.store.getTenant(tenantId);
    if (!t) throw new ProvisioningError('TENANT_NOT_FOUND', `no tenant ${tenantId}`);
    return t;
  }

  /** Trust a manufacturer CA for zero-touch enrollment (its birth certificates). */
  async addManufacturerCa(ctx: TenantContext, req: ManufacturerCaRequest): Promise<Tenant> {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(req.certificate);
    } catch (cause) {
      throw new ProvisioningError('MANUFACTURER_CA_INVALID', 'not a PEM certificate', { cause });
    }
    if (!cert.ca) throw new ProvisioningError('MANUFACTURER_CA_INVALID', 'the certificate is not a CA certificate (basicConstraints CA:TRUE)');
    const current = await this.get(ctx.tenantId);
    const others = (current.manufacturerCas ?? []).filter((c) => c.id !== req.id);
    const next: TenantRecord = { ...current, manufacturerCas: [...others, { id: req.id, name: req.name, certificate: cert.toString(), fingerprint: cert.fingerprint256 }] };
    await this.store.updateTenant(next);
    return toTenantView(next);
  }

  async removeManufacturerCa(ctx: TenantContext, id: string): Promise<Tenant> {
    const current = await this.get(ctx.tenantId);
    if (!(current.manufacturerCas ?? []).some((c) => c.id === id)) throw new ProvisioningError('MANUFACTURER_CA_NOT_FOUND', `no manufacturer CA ${id}`);
    const next: TenantRecord = { ...current, manufacturerCas: (current.manufacturerCas ?? []).filter((c) => c.id !== id) };
    if (next.manufacturerCas!.length === 0) delete next.manufacturerCas;
    await this.store.updateTenant(next);
    return toTenantView(next);
  }

  async update(ctx: TenantContext, req: TenantUpdateRequest): Promise<Tenant> {
    if (req.webhook) validateWebhookUrl(req.webhook.url);
    const current = await this.get(ctx.tenantId);
    const next: TenantRecord = { ...current };
    if (req.name !== undefined) next.name = req.name;
    if (req.provisionalWindowDays !== undefined) next.provisionalWindowDays = req.provisionalWindowDays;
    if (req.serverKeyGeneration !== undefined) next.serverKeyGeneration = req.serverKeyGeneration;
    if (req.preprovisionWebhook === null) delete next.preprovisionWebhook;
    else if (req.preprovisionWebhook !== undefined) {
      validateWebhookUrl(req.preprovisionWebhook.url);
      const { secret, ...rest } = req.preprovisionWebhook;
      next.preprovisionWebhook = secret ? { ...rest, secret: this.box.seal(secret, `preprovision:${ctx.tenantId}`) } : rest;
    }
    if (req.webhook === null) delete next.webhook;
    else if (req.webhook !== undefined) next.webhook = this.#sealed(ctx.tenantId, req.webhook);
    await this.store.updateTenant(next);
    return toTenantView(next);
  }

  async #insert(fields: Omit<TenantRecord, 'createdAt'>): Promise<TenantRecord> {
    const tenant: TenantRecord = { ...fields, createdAt: this.clock.now().toISOString() };
    try {
      await this.store.insertTenant(tenant);
    } catch (err) {
      if (err instanceof StoreError && err.code === 'TENANT_EXISTS') throw new ProvisioningError('TENANT_EXISTS', `tenant ${tenant.id} exists`);
      throw err;
    }
    await this.store.insertProfileVersion(this.profiles.initialDefault(tenant.id));
    return tenant;
  }
}
