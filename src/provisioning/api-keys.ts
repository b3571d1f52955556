/**
 * API keys: "pdk_<id>_<secret>", where only SHA-256(secret) is stored (the secret is 256 random
 * bits, so a fast hash is enough). An operator-configured admin key (config adminApiKey) is kept
 * as a record with the fixed id "configured-admin".
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ApiKey, Role } from '../../schemas/types.js';
import type { AuditTrail } from '../audit/index.js';
import type { Clock } from '../clock.js';
import type { ApiKeyRecord, Store } from '../store/index.js';
import { SERVICE_TENANT } from '../policy/index.js';
import { ProvisioningError } from './errors.js';

export function toApiKeyView(record: ApiKeyRecord): ApiKey {
  const { secretHash: _h, ...view } = record;
  return view;
}

const KEY_FORMAT = /^pdk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const CONFIGURED_ADMIN_ID = 'configured-admin';

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

export class ApiKeys {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly audit: AuditTrail,
  ) {}

  /** A new key; its apikey.create audit entry (by `actor`) is written with it, in one transaction. */
  async create(tenantId: string, name: string, role: Role, actor = 'system'): Promise<ApiKey & { secret: string }> {
    const id = randomBytes(8).toString('hex');
    const secretPart = randomBytes(32).toString('base64url');
    const record: ApiKeyRecord = { id, tenantId, name, role, createdAt: this.clock.now().toISOString(), secretHash: sha256(secretPart) };
    await this.store.insertApiKey(record, [this.audit.entry({ tenantId, actor, action: 'apikey.create', target: `apikey:${id}`, details: { role, name } })]);
    return { ...toApiKeyView(record), secret: `pdk_${id}_${secretPart}` };
  }

  async list(tenantId: string): Promise<ApiKey[]> {
    return (await this.store.listApiKeys(tenantId)).map(toApiKeyView);
  }

  /** Deletes one of the tenant's keys (API_KEY_NOT_FOUND for another tenant's); audited as apikey.revoke. */
  async delete(tenantId: string, id: string, actor = 'system'): Promise<void> {
    const about = { tenantId, actor, action: 'apikey.revoke' as const, target: `apikey:${id}` };
    const key = await this.store.getApiKey(id);
    if (!key || key.tenantId !== tenantId || !(await this.store.deleteApiKey(id, [this.audit.entry({ ...about, details: { role: key.role, name: key.name } })]))) {
      const err = new ProvisioningError('API_KEY_NOT_FOUND', `no API key ${id}`);
      await this.audit.record(this.audit.failure(about, err));
      throw err;
    }
  }

  /** The key's record, or AUTH_INVALID. Constant-time comparison of hashes. */
  async verify(presented: string): Promise<ApiKeyRecord> {
    const m = KEY_FORMAT.exec(presented);
    const [id, secretPart] = m ? [m[1]!, m[2]!] : [CONFIGURED_ADMIN_ID, presented];
    const record = await this.store.getApiKey(id);
    const expected = Buffer.from(record?.secretHash ?? sha256('no such key'), 'hex');
    const actual = Buffer.from(sha256(secretPart), 'hex');
    if (!record || !timingSafeEqual(expected, actual)) throw new ProvisioningError('AUTH_INVALID');
    return record;
  }

  /**
   * First start: with a configured admin key (of the service tenant), keep (only) its hash; otherwise, when no key exists
   * yet, create an admin key and write it to <dataDir>/initial-admin-key (0600). Returns that
   * file's path when one was written.
   */
  async ensureAdmin(dataDir: string, configuredKey: string | undefined): Promise<string | undefined> {
    if (configuredKey) {
      const existing = await this.store.getApiKey(CONFIGURED_ADMIN_ID);
      if (!existing) {
        await this.store.insertApiKey(
          {
            id: CONFIGURED_ADMIN_ID,
            tenantId: SERVICE_TENANT,
            name: 'configured admin key',
            role: 'admin',
            createdAt: this.clock.now().toISOString(),
            secretHash: sha256(configuredKey),
          },
          [this.audit.entry({ tenantId: SERVICE_TENANT, actor: 'system', action: 'apikey.create', target: `apikey:${CONFIGURED_ADMIN_ID}`, details: { role: 'admin', source: 'configuration (adminApiKey)' } })],
        );
      } else if (existing.secretHash !== sha256(configuredKey)) {
        throw new ProvisioningError('AUTH_INVALID', 'adminApiKey differs from the one stored at first start; keys cannot be replaced by configuration');
      }
      return undefined;
    }
    if ((await this.store.countApiKeys()) > 0) return undefined;
    const key = await this.create(SERVICE_TENANT, 'initial admin key', 'admin');
    const file = join(dataDir, 'initial-admin-key');
    await writeFile(file, key.secret + '\n', { mode: 0o600 });
    await chmod(file, 0o600);
    return file;
  }
}
