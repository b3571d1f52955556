/**
 * Reading the audit log (GET /v1/audit). Who sees what: an admin or viewer sees their own
 * tenant's entries; an admin of the service tenant sees every tenant's (all of them, or one with
 * `tenantId`), including the service's own entries (keys created at start). Asking for another
 * tenant without being a service admin is ROLE_FORBIDDEN.
 */
import type { AuditEntry } from '../../schemas/types.js';
import { SERVICE_TENANT } from '../policy/index.js';
import type { AuditQuery, Store } from '../store/index.js';
import type { TenantContext } from './context.js';
import { ProvisioningError } from './errors.js';

/**
 * The store's query (filters, paging); `tenantId` names another tenant's log, which only a service
 * admin may read (without it a service admin gets every tenant's, anyone else their own).
 */
export type AuditListRequest = AuditQuery;

export class AuditLog {
  constructor(private readonly store: Pick<Store, 'listAudit'>) {}

  async list(ctx: Pick<TenantContext, 'tenantId' | 'role'>, req: AuditListRequest): Promise<{ items: AuditEntry[]; next?: string }> {
    const serviceAdmin = ctx.tenantId === SERVICE_TENANT && ctx.role === 'admin';
    if (req.tenantId !== undefined && req.tenantId !== ctx.tenantId && !serviceAdmin) {
      throw new ProvisioningError('ROLE_FORBIDDEN', "only admins of the service tenant read other tenants' audit log");
    }
    const tenantId = serviceAdmin ? req.tenantId : ctx.tenantId;
    const { tenantId: _t, ...filters } = req;
    const page = await this.store.listAudit({ ...filters, ...(tenantId !== undefined ? { tenantId } : {}) });
    return page.next !== undefined ? { items: page.entries, next: page.next } : { items: page.entries };
  }
}
