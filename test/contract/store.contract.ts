/**
 * The Store conformance suite: what EVERY backend (SQLite today, Redis later) must pass. It talks
 * to the backend through the Store interface only.
 *
 * Usage, from a backend's *.test.ts:
 *
 *   storeConformance('sqlite', async () => {
 *     const store = new SqliteStore({ file }); await store.start();
 *     return { store, cleanup, reopen };
 *   });
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StoreError } from '../../src/store/errors.js';
import { copyStore, digestStore, type CopyProgress } from '../../src/store/copy.js';
import type {
  AuditQuery,
  BootstrapTokenRecord,
  CertificateRecord,
  DeviceEntry,
  DeviceQuery,
  DeviceRecord,
  IssuanceCommit,
  ProfileRecord,
  Store,
  StoreCounts,
  StoreEntry,
} from '../../src/store/types.js';
import type { AuditEntry, Device, DeviceEvent } from '../../schemas/types.js';
import {
  claimCodeHash,
  makeApiKey,
  makeAudit,
  makeBootstrapToken,
  makeCertificate,
  makeClaimedDevice,
  makeConfigDocument,
  makeDevice,
  makeEvent,
  makeIssuanceCommit,
  makeProfile,
  makeTenant,
  DEFAULT_TENANT,
  tenantId as newTenantId,
  ts,
} from '../helpers/records.js';

/** What a backend's factory hands the suite, once per test. */
export interface StoreHarness {
  /** A started store over empty backing data, used by this test only. */
  store: Store;
  /** Stops every store this harness handed out (stop() is idempotent) and deletes the backing data. */
  cleanup: () => Promise<void>;
  /**
   * A NEW, started Store instance over the same backing data as `store`: the suite calls it after
   * `store.stop()` to check that committed data survives a restart. Omit it only for a backend
   * without persistence (the persistence test is then skipped).
   */
  reopen?: () => Promise<Store>;
  /**
   * A NEW, started Store over separate, EMPTY backing data of the same backend (cleanup deletes it
   * too): the export/import tests copy into it. Without it those tests are skipped.
   */
  fresh?: () => Promise<Store>;
}

export type StoreFactory = () => Promise<StoreHarness>;

/**
 * The usual harness: `make` builds a new Store over the test's backing data (every call the same
 * data); `wipe` deletes that data after every store was stopped. `makeFresh`, when given, builds a
 * Store over NEW, empty backing data each call (for `fresh`) with the function that deletes it.
 */
export async function reopenableHarness(
  make: () => Store,
  wipe: () => Promise<void> | void = () => undefined,
  makeFresh?: () => { store: Store; wipe: () => Promise<void> | void },
): Promise<StoreHarness> {
  const opened: Store[] = [];
  const wipes: (() => Promise<void> | void)[] = [wipe];
  const start = async (store: Store): Promise<Store> => {
    opened.push(store);
    await store.start();
    return store;
  };
  const open = async (): Promise<Store> => start(make());
  const harness: StoreHarness = {
    store: await open(),
    reopen: open,
    cleanup: async () => {
      for (const s of opened) await s.stop();
      for (const w of wipes) await w();
    },
  };
  if (makeFresh !== undefined) {
    harness.fresh = async () => {
      const fresh = makeFresh();
      wipes.push(fresh.wipe);
      return start(fresh.store);
    };
  }
  return harness;
}

type StoreErrorCode = keyof typeof StoreError.codes;

/** Awaits `promise` and asserts it rejects with a StoreError carrying `code`. */
export async function expectStoreError(promise: Promise<unknown>, code: StoreErrorCode): Promise<StoreError> {
  const err: unknown = await promise.then(
    () => {
      throw new Error(`expected StoreError ${code}, but the call succeeded`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StoreError);
  expect((err as StoreError).code).toBe(code);
  return err as StoreError;
}

function codeOf(result: PromiseSettledResult<unknown>): string | undefined {
  return result.status === 'rejected' && result.reason instanceof StoreError ? result.reason.code : undefined;
}

export function storeConformance(name: string, makeStore: StoreFactory): void {
  describe(`store conformance: ${name}`, () => {
    let harness: StoreHarness;
    let store: Store;

    beforeEach(async () => {
      harness = await makeStore();
      store = harness.store;
    });

    afterEach(async () => {
      await harness.cleanup();
    });

    it('ping answers while started and fails with STORE_UNAVAILABLE once stopped', async () => {
      await expect(store.ping()).resolves.toBeUndefined();
      await store.stop();
      await expectStoreError(store.ping(), 'STORE_UNAVAILABLE');
    });

    /** Inserts a device (with a 'registered' event) and returns it as stored. */
    async function seedDevice(overrides: Partial<DeviceRecord> = {}): Promise<DeviceRecord> {
      const device = makeDevice(overrides);
      await store.insertDevice(device, [makeEvent(device.id, { type: 'registered', to: 'registered' })]);
      return device;
    }

    /** A claimed device with an unconsumed bootstrap token, ready for its first issuance. */
    async function seedClaimed(): Promise<{ device: DeviceRecord; token: BootstrapTokenRecord }> {
      const registered = await seedDevice();
      const claimed = await store.updateDevice(
        { ...registered, state: 'claimed', owner: 'Acme', site: 'HQ', claimedAt: ts(1000), updatedAt: ts(1000) },
        registered.revision,
        [makeEvent(registered.id, { type: 'claimed', from: 'registered', to: 'claimed', actor: 'apikey:k1' })],
      );
      const token = makeBootstrapToken(claimed.id);
      await store.insertBootstrapToken(token);
      return { device: claimed, token };
    }

    /**
     * Everything the Store interface can show, for "nothing was written" checks: every device (of
     * every tenant) with its events, certificates and config documents (versions 1 to its config
     * version + 2), the revoked list, the counts, tenants, and the profiles and API keys of every
     * tenant seen; plus the given bootstrap tokens (they cannot be listed).
     */
    async function fullSnapshot(jtis: readonly string[] = []) {
      const devices = await store.listDevices({ limit: 10_000 });
      const tenants = await store.listTenants();
      const tenantIds = [...new Set([DEFAULT_TENANT, ...tenants.map((t) => t.id), ...devices.map((d) => d.tenantId)])].sort();
      return {
        devices: await Promise.all(
          devices.map(async (d) => ({
            device: d,
            events: await store.listEvents(d.id),
            certificates: await store.listCertificates(d.id),
            configDocuments: await Promise.all(
              Array.from({ length: (d.config?.version ?? 0) + 2 }, (_, i) => store.getConfigDocument(d.id, i + 1)),
            ),
          })),
        ),
        tokens: await Promise.all(jtis.map((jti) => store.getBootstrapToken(jti))),
        revoked: await store.listRevokedCertificates(''),
        counts: await store.countDevicesByState(),
        tenants,
        perTenant: await Promise.all(
          tenantIds.map(async (id) => ({
            id,
            counts: await store.countDevicesByState(id),
            profiles: await store.listProfiles(id),
            apiKeys: await store.listApiKeys(id),
          })),
        ),
        apiKeyCount: await store.countApiKeys(),
      };
    }

    /** Everything a commit could touch, for "nothing was written" checks. */
    async function snapshot(commit: IssuanceCommit, others: { deviceIds?: string[]; jtis?: string[] } = {}) {
      const deviceIds = [commit.device.id, commit.certificate.deviceId, ...(others.deviceIds ?? [])];
      const jtis = [...(commit.consumeToken ? [commit.consumeToken.jti] : []), ...(others.jtis ?? [])];
      const perDevice = await Promise.all(
        deviceIds.map(async (id) => ({
          device: await store.getDevice(id),
          events: await store.listEvents(id),
          certificates: await store.listCertificates(id),
        })),
      );
      const doc = commit.configDocument;
      return {
        perDevice,
        tokens: await Promise.all(jtis.map((jti) => store.getBootstrapToken(jti))),
        certificate: await store.getCertificate(commit.certificate.serial),
        byKey: await store.findCertificateByKey(commit.certificate.keyFingerprint),
        configDocument: doc === undefined ? undefined : await store.getConfigDocument(doc.deviceId, doc.version),
        counts: await store.countDevicesByState(),
        everything: await fullSnapshot(jtis),
      };
    }

    /** Awaits `promise` and asserts it rejects with a plain Error (a programming error), not a StoreError. */
    async function expectProgrammingError(promise: Promise<unknown>, message?: RegExp): Promise<void> {
      const err: unknown = await promise.then(
        () => {
          throw new Error('expected a programming error, but the call succeeded');
        },
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(Error);
      expect(err).not.toBeInstanceOf(StoreError);
      if (message !== undefined) expect((err as Error).message).toMatch(message);
    }

    // ---------------------------------------------------------------------------------------------
    describe('devices', () => {
      it('round-trips a device exactly, every optional field included', async () => {
        const device = makeClaimedDevice({
          tenantId: newTenantId(),
          identityIssuedAt: ts(2000),
          provisionedAt: ts(3000),
          certificateSerial: '1f2e3d4c5b6a',
          certificateNotAfter: ts(400 * 86_400_000),
          stalledAt: ts(2200),
          releasedAt: ts(2300),
          revokedAt: ts(2400),
          decommissionedAt: ts(2500),
          bootstrapJti: 'jti-1',
          config: {
            version: 3,
            items: [
              { id: 'network', required: true, status: 'applied', ackedAt: ts(2500), type: 'network', priority: 0, await: true, version: 3 },
              { id: 'security', required: false, status: 'failed', ackedAt: ts(2600), error: 'TLS_1_3_UNSUPPORTED' },
            ],
          },
          state: 'provisioned',
        });
        await store.insertDevice(device, []);
        expect(await store.getDevice(device.id)).toStrictEqual(device);
      });

      it('round-trips a minimal device without adding absent optional fields', async () => {
        const device = makeDevice();
        await store.insertDevice(device, []);
        const got = await store.getDevice(device.id);
        expect(got).toStrictEqual(device);
        expect(Object.keys(got ?? {}).sort()).toStrictEqual(Object.keys(device).sort());
      });

      it('returns a copy: mutating what was passed or returned does not change the store', async () => {
        const device = makeDevice();
        await store.insertDevice(device, []);
        const expected = structuredClone(device);
        device.state = 'failed';
        const got = await store.getDevice(device.id);
        if (got) got.model = 'mutated';
        expect(await store.getDevice(device.id)).toStrictEqual(expected);
      });

      it('getDevice of an unknown id is undefined', async () => {
        expect(await store.getDevice('no-such-device')).toBeUndefined();
      });

      it('insertDevice appends its events atomically, in order', async () => {
        const device = makeDevice();
        const events = [
          makeEvent(device.id, { type: 'registered', to: 'registered', at: ts(0), actor: 'apikey:k1' }),
          makeEvent(device.id, { type: 'claimed', from: 'registered', to: 'claimed', at: ts(1), reason: 'bulk import' }),
        ];
        await store.insertDevice(device, events);
        expect(await store.listEvents(device.id)).toStrictEqual(events);
      });

      it('insertDevices stores a batch with its events, all or nothing', async () => {
        const batch = Array.from({ length: 50 }, () => makeDevice());
        const events = batch.map((d) => makeEvent(d.id, { type: 'registered', to: 'registered' }));
        await store.insertDevices(batch, events);
        for (const d of batch) {
          expect(await store.getDevice(d.id)).toStrictEqual(d);
          expect(await store.listEvents(d.id)).toHaveLength(1);
        }
        // one clash anywhere in the batch: nothing of it is written
        const existing = batch[10]!;
        for (const [clash, code] of [
          [makeDevice({ id: existing.id }), 'DEVICE_EXISTS'],
          [makeDevice({ claimCodeHash: existing.claimCodeHash }), 'CLAIM_CODE_IN_USE'],
        ] as const) {
          const fresh = Array.from({ length: 5 }, () => makeDevice());
          const attempt = [...fresh.slice(0, 3), clash, ...fresh.slice(3)];
          const err = await store.insertDevices(attempt, attempt.map((d) => makeEvent(d.id))).catch((e: unknown) => e);
          expect(err).toMatchObject({ code, details: { id: clash.id } });
          for (const d of fresh) expect(await store.getDevice(d.id)).toBeUndefined();
          expect(await store.getDevice(existing.id)).toStrictEqual(existing);
        }
        await store.insertDevices([], []);
      });

      it('DEVICE_EXISTS for a second device with the same id; nothing written', async () => {
        const device = await seedDevice();
        const dup = makeDevice({ id: device.id, model: 'camera' });
        await expectStoreError(store.insertDevice(dup, [makeEvent(device.id, { type: 'claimed' })]), 'DEVICE_EXISTS');
        expect(await store.getDevice(device.id)).toStrictEqual(device);
        expect(await store.listEvents(device.id)).toHaveLength(1);
        expect(await store.findDeviceByClaimCodeHash(dup.claimCodeHash)).toBeUndefined();
      });

      it('DEVICE_EXISTS wins when both the id and the claim code hash are taken', async () => {
        const device = await seedDevice();
        await expectStoreError(store.insertDevice({ ...device }, []), 'DEVICE_EXISTS');
      });

      it('CLAIM_CODE_IN_USE for another device with the same claim code hash; nothing written', async () => {
        const device = await seedDevice();
        const other = makeDevice({ claimCodeHash: device.claimCodeHash });
        await expectStoreError(store.insertDevice(other, [makeEvent(other.id)]), 'CLAIM_CODE_IN_USE');
        expect(await store.getDevice(other.id)).toBeUndefined();
        expect(await store.listEvents(other.id)).toStrictEqual([]);
        expect(await store.findDeviceByClaimCodeHash(device.claimCodeHash)).toStrictEqual(device);
      });

      it('findDeviceByClaimCodeHash finds the device, or undefined', async () => {
        const a = await seedDevice();
        const b = await seedDevice();
        expect(await store.findDeviceByClaimCodeHash(a.claimCodeHash)).toStrictEqual(a);
        expect(await store.findDeviceByClaimCodeHash(b.claimCodeHash)).toStrictEqual(b);
        expect(await store.findDeviceByClaimCodeHash('0'.repeat(64))).toBeUndefined();
      });

      it('findDeviceByClaimCodeHash follows a device whose hash changed', async () => {
        const device = await seedDevice();
        const newHash = 'ab'.repeat(32);
        const stored = await store.updateDevice({ ...device, claimCodeHash: newHash }, device.revision, []);
        expect(await store.findDeviceByClaimCodeHash(device.claimCodeHash)).toBeUndefined();
        expect(await store.findDeviceByClaimCodeHash(newHash)).toStrictEqual(stored);
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('listDevices and countDevicesByState', () => {
      // Binary (code unit) order: digits < upper case < '-' ... < lower case.
      const ids = ['b-2', 'A-1', 'a-1', '0-z', 'B-10', 'b-10', 'a.1', 'a_1', 'Z9'];
      const states: Record<string, Device['state']> = { 'A-1': 'claimed', 'b-2': 'claimed', Z9: 'claimed', 'a_1': 'failed' };
      let inserted: DeviceRecord[];

      beforeEach(async () => {
        inserted = [];
        for (const id of ids) inserted.push(await seedDevice({ id, state: states[id] ?? 'registered' }));
      });

      const sortedIds = () => [...ids].sort();
      const byId = (id: string) => inserted.find((d) => d.id === id);

      it('orders by id ascending (binary order) and returns full records', async () => {
        const all = await store.listDevices({ limit: 100 });
        expect(all.map((d) => d.id)).toStrictEqual(sortedIds());
        expect(all).toStrictEqual(sortedIds().map(byId));
      });

      it('respects limit', async () => {
        expect((await store.listDevices({ limit: 3 })).map((d) => d.id)).toStrictEqual(sortedIds().slice(0, 3));
        expect(await store.listDevices({ limit: 0 })).toStrictEqual([]);
      });

      it('pages with after/limit (keyset) without gaps or repeats', async () => {
        const seen: string[] = [];
        let after: string | undefined;
        for (;;) {
          const page = await store.listDevices(after === undefined ? { limit: 2 } : { limit: 2, after });
          expect(page.length).toBeLessThanOrEqual(2);
          if (page.length === 0) break;
          seen.push(...page.map((d) => d.id));
          after = page[page.length - 1]?.id;
        }
        expect(seen).toStrictEqual(sortedIds());
      });

      it('after need not be an existing id', async () => {
        expect((await store.listDevices({ limit: 100, after: 'a' })).map((d) => d.id)).toStrictEqual(
          sortedIds().filter((id) => id > 'a'),
        );
        expect(await store.listDevices({ limit: 100, after: '~' })).toStrictEqual([]);
      });

      it('filters by state, with paging', async () => {
        const claimed = sortedIds().filter((id) => states[id] === 'claimed');
        expect((await store.listDevices({ state: 'claimed', limit: 100 })).map((d) => d.id)).toStrictEqual(claimed);
        const first = await store.listDevices({ state: 'claimed', limit: 1 });
        expect(first.map((d) => d.id)).toStrictEqual(claimed.slice(0, 1));
        const rest = await store.listDevices({ state: 'claimed', limit: 100, after: first[0]?.id ?? '' });
        expect(rest.map((d) => d.id)).toStrictEqual(claimed.slice(1));
        expect(await store.listDevices({ state: 'provisioned', limit: 100 })).toStrictEqual([]);
      });

      it('counts devices by state, omitting states with no device', async () => {
        expect(await store.countDevicesByState()).toStrictEqual({ registered: 5, claimed: 3, failed: 1 });
      });

      it('reflects updates in the state filter and the counts', async () => {
        const d = byId('a-1');
        if (!d) throw new Error('seed missing');
        await store.updateDevice({ ...d, state: 'claimed' }, d.revision, []);
        expect(await store.countDevicesByState()).toStrictEqual({ registered: 4, claimed: 4, failed: 1 });
        expect((await store.listDevices({ state: 'claimed', limit: 100 })).map((x) => x.id)).toContain('a-1');
      });
    });

    it('countDevicesByState of an empty store is {}', async () => {
      expect(await store.countDevicesByState()).toStrictEqual({});
      expect(await store.listDevices({ limit: 10 })).toStrictEqual([]);
    });

    // ---------------------------------------------------------------------------------------------
    describe('updateDevice', () => {
      it('replaces the device, stores revision + 1, returns what is stored, appends events in order', async () => {
        const device = await seedDevice();
        const next: DeviceRecord = { ...device, state: 'claimed', owner: 'Acme', claimedAt: ts(5), updatedAt: ts(5) };
        const events = [
          makeEvent(device.id, { type: 'claimed', from: 'registered', to: 'claimed', at: ts(5), actor: 'apikey:k1' }),
          makeEvent(device.id, { type: 'config_delivered', at: ts(6) }),
        ];
        const stored = await store.updateDevice(next, 1, events);
        expect(stored).toStrictEqual({ ...next, revision: 2 });
        expect(await store.getDevice(device.id)).toStrictEqual(stored);
        const all = await store.listEvents(device.id);
        expect(all).toHaveLength(3);
        expect(all.slice(1)).toStrictEqual(events);
      });

      it('replaces rather than merges: an optional field left out is removed', async () => {
        const device = makeClaimedDevice();
        await store.insertDevice(device, []);
        const { owner: _owner, network: _net, deadlineAt: _deadline, ...rest } = device;
        const stored = await store.updateDevice({ ...rest, state: 'released' }, device.revision, []);
        expect(stored).not.toHaveProperty('owner');
        expect(stored).not.toHaveProperty('network');
        expect(stored).not.toHaveProperty('deadlineAt');
        expect(await store.getDevice(device.id)).toStrictEqual(stored);
      });

      it('chains: each success bumps the revision by one', async () => {
        let d = await seedDevice();
        for (let i = 0; i < 5; i++) d = await store.updateDevice({ ...d, updatedAt: ts(i) }, d.revision, []);
        expect(d.revision).toBe(6);
        expect((await store.getDevice(d.id))?.revision).toBe(6);
      });

      it('REVISION_CONFLICT on a stale revision; nothing written, no events', async () => {
        const device = await seedDevice();
        const current = await store.updateDevice({ ...device, state: 'claimed' }, 1, [makeEvent(device.id)]);
        const before = { device: await store.getDevice(device.id), events: await store.listEvents(device.id) };
        await expectStoreError(
          store.updateDevice({ ...device, state: 'failed' }, 1, [makeEvent(device.id, { type: 'claimed' })]),
          'REVISION_CONFLICT',
        );
        await expectStoreError(store.updateDevice({ ...current, state: 'failed' }, 3, []), 'REVISION_CONFLICT');
        expect({ device: await store.getDevice(device.id), events: await store.listEvents(device.id) }).toStrictEqual(
          before,
        );
      });

      it('DEVICE_NOT_FOUND for an unknown device; nothing written', async () => {
        const ghost = makeDevice();
        await expectStoreError(store.updateDevice(ghost, 1, [makeEvent(ghost.id)]), 'DEVICE_NOT_FOUND');
        expect(await store.getDevice(ghost.id)).toBeUndefined();
        expect(await store.listEvents(ghost.id)).toStrictEqual([]);
      });

      it('50 concurrent updates from the same revision: exactly one wins, the rest REVISION_CONFLICT', async () => {
        const device = await seedDevice();
        const results = await Promise.allSettled(
          Array.from({ length: 50 }, (_, i) =>
            store.updateDevice({ ...device, owner: `owner-${i}` }, device.revision, [
              makeEvent(device.id, { type: 'claimed', reason: `attempt ${i}` }),
            ]),
          ),
        );
        const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [{ i, value: r.value }] : []));
        expect(winners).toHaveLength(1);
        expect(results.filter((r) => codeOf(r) === 'REVISION_CONFLICT')).toHaveLength(49);
        const winner = winners[0];
        if (!winner) throw new Error('no winner');
        expect(winner.value.revision).toBe(2);
        expect(await store.getDevice(device.id)).toStrictEqual(winner.value);
        const events = await store.listEvents(device.id);
        expect(events).toHaveLength(2);
        expect(events[1]?.reason).toBe(`attempt ${winner.i}`);
      });

      it('writes of many devices issued together: each settles on its own, the failing ones change nothing', async () => {
        // what a busy service does (and what the SQLite store commits as one group)
        const devices = await Promise.all(Array.from({ length: 12 }, () => seedDevice()));
        const before = await digestStore(store);
        const duplicate = makeDevice({ id: devices[0]!.id });
        const results = await Promise.allSettled([
          ...devices.map((d, i) =>
            store.updateDevice({ ...d, owner: `owner-${i}` }, i % 4 === 3 ? d.revision + 5 : d.revision, [
              makeEvent(d.id, { type: 'claimed', reason: `batch ${i}` }),
            ]),
          ),
          store.insertDevice(duplicate, [makeEvent(duplicate.id, { type: 'registered', to: 'registered' })]),
        ]);
        expect(codeOf(results[12]!)).toBe('DEVICE_EXISTS');
        for (const [i, d] of devices.entries()) {
          const stale = i % 4 === 3;
          expect(results[i]!.status, `device ${i}`).toBe(stale ? 'rejected' : 'fulfilled');
          if (stale) expect(codeOf(results[i]!)).toBe('REVISION_CONFLICT');
          const now = await store.getDevice(d.id);
          expect(now?.owner).toBe(stale ? d.owner : `owner-${i}`);
          const events = await store.listEvents(d.id);
          expect(events).toHaveLength(stale ? 1 : 2);
          if (!stale) expect(events[1]?.reason).toBe(`batch ${i}`);
        }
        // nothing but the nine accepted updates and their events changed
        const after = await digestStore(store);
        expect(after.counts.devices).toBe(before.counts.devices);
        expect(after.counts.events).toBe(before.counts.events + 9);
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('events', () => {
      it('listEvents of an unknown device is []', async () => {
        expect(await store.listEvents('nobody')).toStrictEqual([]);
      });

      it('keeps each device history separate and oldest first across interleaved writes', async () => {
        let a = await seedDevice();
        let b = await seedDevice();
        for (let i = 0; i < 4; i++) {
          a = await store.updateDevice(a, a.revision, [makeEvent(a.id, { type: 'config_delivered', reason: `a${i}` })]);
          b = await store.updateDevice(b, b.revision, [makeEvent(b.id, { type: 'config_delivered', reason: `b${i}` })]);
        }
        const reasons = async (id: string) => (await store.listEvents(id)).slice(1).map((e: DeviceEvent) => e.reason);
        expect(await reasons(a.id)).toStrictEqual(['a0', 'a1', 'a2', 'a3']);
        expect(await reasons(b.id)).toStrictEqual(['b0', 'b1', 'b2', 'b3']);
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('bootstrap tokens', () => {
      it('round-trips a token', async () => {
        const device = await seedDevice();
        const token = makeBootstrapToken(device.id);
        await store.insertBootstrapToken(token);
        expect(await store.getBootstrapToken(token.jti)).toStrictEqual(token);
        expect(await store.getBootstrapToken('no-such-jti')).toBeUndefined();
      });

      it('TOKEN_EXISTS for a second token with the same jti; the first is unchanged', async () => {
        const device = await seedDevice();
        const token = makeBootstrapToken(device.id);
        await store.insertBootstrapToken(token);
        await expectStoreError(
          store.insertBootstrapToken({ ...token, expiresAt: ts(99_000_000) }),
          'TOKEN_EXISTS',
        );
        expect(await store.getBootstrapToken(token.jti)).toStrictEqual(token);
      });

      describe('deleteExpiredBootstrapTokens', () => {
        it('deletes unconsumed tokens that expired before the instant, earliest first, a limited batch at a time', async () => {
          const device = await seedDevice();
          const other = await seedDevice();
          const t1 = makeBootstrapToken(device.id, { expiresAt: ts(10_000) });
          const t2 = makeBootstrapToken(other.id, { expiresAt: ts(20_000) });
          const t3 = makeBootstrapToken(device.id, { expiresAt: ts(30_000) });
          const atInstant = makeBootstrapToken(device.id, { expiresAt: ts(40_000) });
          const later = makeBootstrapToken(other.id, { expiresAt: ts(50_000) });
          for (const t of [t3, later, t1, atInstant, t2]) await store.insertBootstrapToken(t);

          expect(await store.deleteExpiredBootstrapTokens(ts(40_000), 2)).toStrictEqual([t1, t2]);
          expect(await store.getBootstrapToken(t1.jti)).toBeUndefined();
          expect(await store.getBootstrapToken(t2.jti)).toBeUndefined();
          expect(await store.deleteExpiredBootstrapTokens(ts(40_000), 2)).toStrictEqual([t3]);
          expect(await store.deleteExpiredBootstrapTokens(ts(40_000), 2)).toStrictEqual([]);
          // strictly before: the token expiring at the instant, and later ones, stay
          expect(await store.getBootstrapToken(atInstant.jti)).toStrictEqual(atInstant);
          expect(await store.getBootstrapToken(later.jti)).toStrictEqual(later);
          expect(await store.deleteExpiredBootstrapTokens(ts(99_000), 0)).toStrictEqual([]);
          expect(await store.deleteExpiredBootstrapTokens(ts(99_000), 10)).toStrictEqual([atInstant, later]);
          expect((await store.countEntries()).bootstrapTokens).toBe(0);
          // the devices are not touched
          expect(await store.getDevice(device.id)).toStrictEqual(device);
        });

        it('never deletes a consumed token, however old', async () => {
          const { device, token } = await seedClaimed();
          await store.commitIssuance(makeIssuanceCommit(device, { token }));
          const consumed = await store.getBootstrapToken(token.jti);
          expect(consumed?.consumedAt).toBeDefined();
          expect(await store.deleteExpiredBootstrapTokens(ts(365 * 86_400_000), 100)).toStrictEqual([]);
          expect(await store.getBootstrapToken(token.jti)).toStrictEqual(consumed);
        });

        it('gives each expired token to one caller only', async () => {
          const device = await seedDevice();
          const tokens = Array.from({ length: 6 }, (_, i) => makeBootstrapToken(device.id, { expiresAt: ts(1000 + i) }));
          for (const t of tokens) await store.insertBootstrapToken(t);
          const pages = await Promise.all([1, 2, 3].map(() => store.deleteExpiredBootstrapTokens(ts(99_000), 4)));
          expect(pages.flat().map((t) => t.jti).sort()).toStrictEqual(tokens.map((t) => t.jti).sort());
        });

        it('sweeps tokens that came in through importEntries', async () => {
          const device = await seedDevice();
          const old = makeBootstrapToken(device.id, { expiresAt: ts(5000) });
          const imported = makeDevice();
          const importedToken = makeBootstrapToken(imported.id, { expiresAt: ts(6000) });
          await store.importEntries([
            { kind: 'device', device: imported, events: [], certificates: [], configDocuments: [], bootstrapTokens: [importedToken] },
          ]);
          await store.insertBootstrapToken(old);
          expect(await store.deleteExpiredBootstrapTokens(ts(99_000), 10)).toStrictEqual([old, importedToken]);
        });
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('commitIssuance', () => {
      it('commits everything: token consumed, certificate active, config stored, device bumped, events', async () => {
        const { device, token } = await seedClaimed();
        const commit = makeIssuanceCommit(device, { token });
        const eventsBefore = await store.listEvents(device.id);

        const stored = await store.commitIssuance(commit);

        expect(stored).toStrictEqual({ ...commit.device, revision: device.revision + 1 });
        expect(await store.getDevice(device.id)).toStrictEqual(stored);
        expect(await store.getBootstrapToken(token.jti)).toStrictEqual({
          ...token,
          consumedAt: commit.consumeToken?.consumedAt,
          certificateSerial: commit.certificate.serial,
          keyFingerprint: commit.certificate.keyFingerprint,
        });
        expect(await store.getCertificate(commit.certificate.serial)).toStrictEqual(commit.certificate);
        expect(await store.listCertificates(device.id)).toStrictEqual([commit.certificate]);
        expect(await store.findCertificateByKey(commit.certificate.keyFingerprint)).toStrictEqual(commit.certificate);
        expect(await store.getConfigDocument(device.id, commit.configDocument?.version ?? 0)).toStrictEqual(
          commit.configDocument,
        );
        expect(await store.listEvents(device.id)).toStrictEqual([...eventsBefore, ...commit.events]);
        expect(await store.countDevicesByState()).toStrictEqual({ identity_issued: 1 });
      });

      it('stores the new certificate as active whatever status the caller set', async () => {
        const { device, token } = await seedClaimed();
        const commit = makeIssuanceCommit(device, { token, certificate: { status: 'superseded' } });
        await store.commitIssuance(commit);
        expect((await store.getCertificate(commit.certificate.serial))?.status).toBe('active');
      });

      it('supersedes the previous active certificate; listCertificates is newest first', async () => {
        const { device, token } = await seedClaimed();
        const first = makeIssuanceCommit(device, { token, at: ts(10_000) });
        const afterFirst = await store.commitIssuance(first);
        // Re-issuance (operational renewal): no bootstrap token.
        const second = makeIssuanceCommit(afterFirst, { at: ts(20_000) });
        const afterSecond = await store.commitIssuance(second);
        const third = makeIssuanceCommit(afterSecond, { at: ts(30_000) });
        await store.commitIssuance(third);

        const superseded = (c: CertificateRecord): CertificateRecord => ({ ...c, status: 'superseded' });
        expect(await store.listCertificates(device.id)).toStrictEqual([
          third.certificate,
          superseded(second.certificate),
          superseded(first.certificate),
        ]);
        expect(await store.getCertificate(first.certificate.serial)).toStrictEqual(superseded(first.certificate));
        expect(await store.getConfigDocument(device.id, 1)).toStrictEqual(first.configDocument);
        expect(await store.getConfigDocument(device.id, 3)).toStrictEqual(third.configDocument);
        expect((await store.getDevice(device.id))?.revision).toBe(device.revision + 3);
      });

      it("does not touch other devices' certificates", async () => {
        const a = await seedClaimed();
        const b = await seedClaimed();
        const ca = makeIssuanceCommit(a.device, { token: a.token });
        const cb = makeIssuanceCommit(b.device, { token: b.token });
        await store.commitIssuance(ca);
        await store.commitIssuance(cb);
        expect(await store.listCertificates(a.device.id)).toStrictEqual([ca.certificate]);
        expect(await store.listCertificates(b.device.id)).toStrictEqual([cb.certificate]);
      });

      it('the same device may re-certify the same key', async () => {
        const { device, token } = await seedClaimed();
        const first = makeIssuanceCommit(device, { token, at: ts(10_000) });
        const afterFirst = await store.commitIssuance(first);
        const again = makeIssuanceCommit(afterFirst, {
          at: ts(20_000),
          certificate: { keyFingerprint: first.certificate.keyFingerprint },
        });
        await store.commitIssuance(again);
        expect((await store.listCertificates(device.id)).map((c) => [c.serial, c.status])).toStrictEqual([
          [again.certificate.serial, 'active'],
          [first.certificate.serial, 'superseded'],
        ]);
        const byKey = await store.findCertificateByKey(first.certificate.keyFingerprint);
        expect(byKey?.deviceId).toBe(device.id);
        expect(byKey?.keyFingerprint).toBe(first.certificate.keyFingerprint);
      });

      describe('failures leave the store exactly unchanged', () => {
        it('DEVICE_NOT_FOUND', async () => {
          const ghost = makeDevice({ state: 'claimed' });
          const commit = makeIssuanceCommit(ghost);
          const before = await snapshot(commit);
          await expectStoreError(store.commitIssuance(commit), 'DEVICE_NOT_FOUND');
          expect(await snapshot(commit)).toStrictEqual(before);
        });

        it('REVISION_CONFLICT (device changed meanwhile)', async () => {
          const { device, token } = await seedClaimed();
          const commit = makeIssuanceCommit(device, { token });
          await store.updateDevice({ ...device, site: 'moved' }, device.revision, []);
          const before = await snapshot(commit);
          await expectStoreError(store.commitIssuance(commit), 'REVISION_CONFLICT');
          expect(await snapshot(commit)).toStrictEqual(before);
        });

        it('TOKEN_NOT_FOUND (unknown jti)', async () => {
          const { device } = await seedClaimed();
          const commit = makeIssuanceCommit(device, { token: makeBootstrapToken(device.id) });
          const before = await snapshot(commit);
          await expectStoreError(store.commitIssuance(commit), 'TOKEN_NOT_FOUND');
          expect(await snapshot(commit)).toStrictEqual(before);
        });

        it("TOKEN_NOT_FOUND (another device's token)", async () => {
          const a = await seedClaimed();
          const b = await seedClaimed();
          const commit = makeIssuanceCommit(a.device, { token: b.token });
          const before = await snapshot(commit, { deviceIds: [b.device.id], jtis: [a.token.jti] });
          await expectStoreError(store.commitIssuance(commit), 'TOKEN_NOT_FOUND');
          expect(await snapshot(commit, { deviceIds: [b.device.id], jtis: [a.token.jti] })).toStrictEqual(before);
        });

        it('TOKEN_USED (second commit with the same jti)', async () => {
          const { device, token } = await seedClaimed();
          const stored = await store.commitIssuance(makeIssuanceCommit(device, { token, at: ts(10_000) }));
          const replay = makeIssuanceCommit(stored, { token, at: ts(20_000) });
          const before = await snapshot(replay);
          await expectStoreError(store.commitIssuance(replay), 'TOKEN_USED');
          expect(await snapshot(replay)).toStrictEqual(before);
        });

        it('SERIAL_EXISTS (serial of another certificate)', async () => {
          const a = await seedClaimed();
          const b = await seedClaimed();
          const ca = makeIssuanceCommit(a.device, { token: a.token });
          await store.commitIssuance(ca);
          const commit = makeIssuanceCommit(b.device, { token: b.token, certificate: { serial: ca.certificate.serial } });
          const before = await snapshot(commit, { deviceIds: [a.device.id], jtis: [a.token.jti] });
          await expectStoreError(store.commitIssuance(commit), 'SERIAL_EXISTS');
          expect(await snapshot(commit, { deviceIds: [a.device.id], jtis: [a.token.jti] })).toStrictEqual(before);
        });

        it('SERIAL_EXISTS (serial of the same device)', async () => {
          const { device, token } = await seedClaimed();
          const first = makeIssuanceCommit(device, { token });
          const stored = await store.commitIssuance(first);
          const commit = makeIssuanceCommit(stored, { certificate: { serial: first.certificate.serial } });
          const before = await snapshot(commit);
          await expectStoreError(store.commitIssuance(commit), 'SERIAL_EXISTS');
          expect(await snapshot(commit)).toStrictEqual(before);
        });

        it('KEY_IN_USE (key certified for another device, whatever that certificate status)', async () => {
          const a = await seedClaimed();
          const b = await seedClaimed();
          const ca = makeIssuanceCommit(a.device, { token: a.token, at: ts(10_000) });
          const aStored = await store.commitIssuance(ca);
          // a renews with another key: its first certificate (with the key b wants) is now superseded.
          await store.commitIssuance(makeIssuanceCommit(aStored, { at: ts(20_000) }));
          const commit = makeIssuanceCommit(b.device, {
            token: b.token,
            certificate: { keyFingerprint: ca.certificate.keyFingerprint },
          });
          const others = { deviceIds: [a.device.id], jtis: [a.token.jti] };
          const before = await snapshot(commit, others);
          await expectStoreError(store.commitIssuance(commit), 'KEY_IN_USE');
          expect(await snapshot(commit, others)).toStrictEqual(before);
        });

        it('checks in the documented order', async () => {
          const a = await seedClaimed();
          const b = await seedClaimed();
          const ca = makeIssuanceCommit(a.device, { token: a.token });
          await store.commitIssuance(ca);
          const taken = { serial: ca.certificate.serial, keyFingerprint: ca.certificate.keyFingerprint };
          // revision before token
          await expectStoreError(
            store.commitIssuance({ ...makeIssuanceCommit(b.device, { token: a.token, certificate: taken }), expectedRevision: 99 }),
            'REVISION_CONFLICT',
          );
          // token before serial and key
          await expectStoreError(
            store.commitIssuance(makeIssuanceCommit(b.device, { token: a.token, certificate: taken })),
            'TOKEN_NOT_FOUND',
          );
          // serial before key
          await expectStoreError(
            store.commitIssuance(makeIssuanceCommit(b.device, { token: b.token, certificate: taken })),
            'SERIAL_EXISTS',
          );
          // and b is still untouched
          expect(await store.listCertificates(b.device.id)).toStrictEqual([]);
          expect((await store.getBootstrapToken(b.token.jti))?.consumedAt).toBeUndefined();
        });
      });

      it('20 concurrent commits with the same token: exactly one succeeds', async () => {
        const { device, token } = await seedClaimed();
        const commits = Array.from({ length: 20 }, (_, i) => makeIssuanceCommit(device, { token, at: ts(10_000 + i) }));
        const eventsBefore = await store.listEvents(device.id);
        const results = await Promise.allSettled(commits.map((c) => store.commitIssuance(c)));

        const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
        expect(winners).toHaveLength(1);
        for (const r of results) {
          if (r.status === 'rejected') expect(['REVISION_CONFLICT', 'TOKEN_USED']).toContain(codeOf(r));
        }
        const won = commits[winners[0] ?? -1];
        if (!won) throw new Error('no winner');
        expect((await store.getBootstrapToken(token.jti))?.certificateSerial).toBe(won.certificate.serial);
        expect(await store.listCertificates(device.id)).toStrictEqual([won.certificate]);
        expect(await store.listEvents(device.id)).toStrictEqual([...eventsBefore, ...won.events]);
        expect(await store.getDevice(device.id)).toStrictEqual({ ...won.device, revision: device.revision + 1 });
        for (const c of commits) {
          if (c !== won) expect(await store.getCertificate(c.certificate.serial)).toBeUndefined();
        }
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('certificates and config documents', () => {
      it('unknown lookups are undefined / []', async () => {
        expect(await store.getCertificate('0abc')).toBeUndefined();
        expect(await store.findCertificateByKey('ff'.repeat(32))).toBeUndefined();
        expect(await store.listCertificates('nobody')).toStrictEqual([]);
        expect(await store.getConfigDocument('nobody', 1)).toBeUndefined();
      });

      it('finds a certificate by key fingerprint, of any device', async () => {
        const a = await seedClaimed();
        const b = await seedClaimed();
        const ca = makeIssuanceCommit(a.device, { token: a.token });
        const cb = makeIssuanceCommit(b.device, { token: b.token });
        await store.commitIssuance(ca);
        await store.commitIssuance(cb);
        expect(await store.findCertificateByKey(ca.certificate.keyFingerprint)).toStrictEqual(ca.certificate);
        expect(await store.findCertificateByKey(cb.certificate.keyFingerprint)).toStrictEqual(cb.certificate);
      });

      it('getConfigDocument is keyed by device and version', async () => {
        const a = await seedClaimed();
        const b = await seedClaimed();
        const doc = makeConfigDocument(a.device.id, 1);
        await store.commitIssuance({ ...makeIssuanceCommit(a.device, { token: a.token }), configDocument: doc });
        expect(await store.getConfigDocument(a.device.id, 1)).toStrictEqual(doc);
        expect(await store.getConfigDocument(a.device.id, 2)).toBeUndefined();
        expect(await store.getConfigDocument(b.device.id, 1)).toBeUndefined();
      });

      it('round-trips a certificate exactly', async () => {
        const { device, token } = await seedClaimed();
        const certificate = makeCertificate(device.id, { pem: '-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n' });
        await store.commitIssuance({ ...makeIssuanceCommit(device, { token }), certificate });
        expect(await store.getCertificate(certificate.serial)).toStrictEqual(certificate);
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('api keys', () => {
      it('inserts, gets and counts', async () => {
        expect(await store.countApiKeys()).toBe(0);
        const admin = makeApiKey();
        const viewer = makeApiKey({ role: 'viewer', name: 'dashboard' });
        await store.insertApiKey(admin);
        await store.insertApiKey(viewer);
        expect(await store.getApiKey(admin.id)).toStrictEqual(admin);
        expect(await store.getApiKey(viewer.id)).toStrictEqual(viewer);
        expect(await store.getApiKey('no-such-key')).toBeUndefined();
        expect(await store.countApiKeys()).toBe(2);
      });

      it('API_KEY_EXISTS for a second key with the same id; the first is unchanged', async () => {
        const key = makeApiKey();
        await store.insertApiKey(key);
        await expectStoreError(store.insertApiKey({ ...key, role: 'factory', secretHash: '00'.repeat(32) }), 'API_KEY_EXISTS');
        expect(await store.getApiKey(key.id)).toStrictEqual(key);
        expect(await store.countApiKeys()).toBe(1);
      });

      it("listApiKeys lists one tenant's keys, ordered by id", async () => {
        const tA = newTenantId();
        const tB = newTenantId();
        const a2 = makeApiKey({ id: 'key-b', tenantId: tA });
        const a1 = makeApiKey({ id: 'key-a', tenantId: tA, role: 'installer' });
        const b1 = makeApiKey({ id: 'key-0', tenantId: tB });
        const d1 = makeApiKey();
        for (const k of [a2, b1, a1, d1]) await store.insertApiKey(k);
        expect(await store.listApiKeys(tA)).toStrictEqual([a1, a2]);
        expect(await store.listApiKeys(tB)).toStrictEqual([b1]);
        expect(await store.listApiKeys(DEFAULT_TENANT)).toStrictEqual([d1]);
        expect(await store.listApiKeys('no-such-tenant')).toStrictEqual([]);
        expect(await store.countApiKeys()).toBe(4);
      });

      it('deleteApiKey removes the key and says whether it existed', async () => {
        const key = makeApiKey();
        const other = makeApiKey();
        await store.insertApiKey(key);
        await store.insertApiKey(other);
        expect(await store.deleteApiKey(key.id)).toBe(true);
        expect(await store.getApiKey(key.id)).toBeUndefined();
        expect(await store.listApiKeys(DEFAULT_TENANT)).toStrictEqual([other]);
        expect(await store.countApiKeys()).toBe(1);
        expect(await store.deleteApiKey(key.id)).toBe(false);
        expect(await store.deleteApiKey('no-such-key')).toBe(false);
        expect(await store.getApiKey(other.id)).toStrictEqual(other);
        // the id can be used again
        await store.insertApiKey(key);
        expect(await store.getApiKey(key.id)).toStrictEqual(key);
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('programming errors: every part of a write must be about the device written', () => {
      it('insertDevice with an event of another device throws a plain Error; nothing written', async () => {
        const other = await seedDevice();
        const device = makeDevice();
        const before = await fullSnapshot();
        await expectProgrammingError(store.insertDevice(device, [makeEvent(device.id), makeEvent(other.id)]), /device/);
        expect(await fullSnapshot()).toStrictEqual(before);
      });

      it('updateDevice with an event or a config document of another device; nothing written', async () => {
        const a = await seedDevice();
        const b = await seedDevice();
        const before = await fullSnapshot();
        await expectProgrammingError(store.updateDevice({ ...a, state: 'claimed' }, a.revision, [makeEvent(b.id)]), /device/);
        await expectProgrammingError(
          store.updateDevice({ ...a, state: 'claimed' }, a.revision, [], { configDocument: makeConfigDocument(b.id, 1) }),
          /device/,
        );
        expect(await fullSnapshot()).toStrictEqual(before);
      });

      it('commitIssuance with a certificate, config document or event of another device; nothing written', async () => {
        const a = await seedClaimed();
        const b = await seedClaimed();
        const base = () => makeIssuanceCommit(a.device, { token: a.token });
        const jtis = [a.token.jti, b.token.jti];
        const before = await fullSnapshot(jtis);
        await expectProgrammingError(store.commitIssuance({ ...base(), certificate: makeCertificate(b.device.id) }), /device/);
        await expectProgrammingError(
          store.commitIssuance({ ...base(), configDocument: makeConfigDocument(b.device.id, 1) }),
          /device/,
        );
        await expectProgrammingError(
          store.commitIssuance({ ...base(), events: [makeEvent(a.device.id), makeEvent(b.device.id)] }),
          /device/,
        );
        expect(await fullSnapshot(jtis)).toStrictEqual(before);
        // and a consistent commit goes through
        await store.commitIssuance(base());
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('listDevices filters and tenant isolation', () => {
      const tA = 'tenant-a';
      const tB = 'tenant-b';
      const cycle: Device['state'][] = ['claimed', 'identity_issued', 'configuring', 'provisioned', 'stalled', 'registered'];
      let all: DeviceRecord[];

      beforeEach(async () => {
        all = [];
        for (let i = 0; i < 24; i++) {
          const overrides: Partial<DeviceRecord> = {
            id: `d-${String(i).padStart(2, '0')}`,
            tenantId: i % 3 === 0 ? tB : tA,
            state: cycle[i % cycle.length] ?? 'registered',
          };
          if (i % 4 !== 0) overrides.profileId = i % 2 === 0 ? 'p-even' : 'p-odd';
          if (i % 5 !== 0) overrides.deadlineAt = ts(i * 1000);
          if (i % 5 !== 2) overrides.provisionalUntil = ts((24 - i) * 1000);
          all.push(await seedDevice(overrides));
        }
        // devices of the default tenant from the other seeds never leak into tenant queries
        await seedDevice({ id: 'd-00x', state: 'claimed', profileId: 'p-even', deadlineAt: ts(0), provisionalUntil: ts(0) });
      });

      const matches = (d: DeviceRecord, q: DeviceQuery): boolean =>
        (q.tenantId === undefined || d.tenantId === q.tenantId) &&
        (q.state === undefined || d.state === q.state) &&
        (q.states === undefined || q.states.includes(d.state)) &&
        (q.profileId === undefined || d.profileId === q.profileId) &&
        (q.deadlineBefore === undefined || (d.deadlineAt !== undefined && d.deadlineAt < q.deadlineBefore)) &&
        (q.provisionalBefore === undefined ||
          (d.provisionalUntil !== undefined && d.provisionalUntil < q.provisionalBefore)) &&
        (q.after === undefined || d.id > q.after);

      async function expected(q: DeviceQuery): Promise<DeviceRecord[]> {
        const everything = await store.listDevices({ limit: 10_000 });
        return everything.filter((d) => matches(d, q)).slice(0, q.limit);
      }

      const queries: { q: DeviceQuery; nonEmpty: boolean }[] = [
        { q: { tenantId: tA, limit: 100 }, nonEmpty: true },
        { q: { tenantId: tB, limit: 100 }, nonEmpty: true },
        { q: { tenantId: 'no-such-tenant', limit: 100 }, nonEmpty: false },
        { q: { states: ['claimed', 'identity_issued', 'configuring'], limit: 100 }, nonEmpty: true },
        { q: { states: [], limit: 100 }, nonEmpty: false },
        { q: { state: 'claimed', states: ['claimed', 'stalled'], limit: 100 }, nonEmpty: true },
        { q: { state: 'provisioned', states: ['claimed', 'stalled'], limit: 100 }, nonEmpty: false },
        { q: { profileId: 'p-odd', limit: 100 }, nonEmpty: true },
        { q: { tenantId: tA, profileId: 'p-even', limit: 100 }, nonEmpty: true },
        { q: { deadlineBefore: ts(10_000), limit: 100 }, nonEmpty: true },
        { q: { deadlineBefore: ts(1000), limit: 100 }, nonEmpty: true }, // strict: d-01 (deadline ts(1000)) is out
        { q: { provisionalBefore: ts(12_000), limit: 100 }, nonEmpty: true },
        {
          q: { tenantId: tA, states: ['claimed', 'identity_issued', 'configuring', 'stalled'], deadlineBefore: ts(20_000), limit: 100 },
          nonEmpty: true,
        },
        {
          q: {
            tenantId: tA,
            state: 'identity_issued',
            states: ['identity_issued', 'provisioned'],
            profileId: 'p-odd',
            deadlineBefore: ts(30_000),
            provisionalBefore: ts(30_000),
            after: 'd-00',
            limit: 100,
          },
          nonEmpty: true,
        },
        { q: { tenantId: tB, provisionalBefore: ts(1), limit: 100 }, nonEmpty: false },
        { q: { tenantId: tA, after: 'd-10', limit: 3 }, nonEmpty: true },
      ];

      it('each filter and their combinations select exactly the matching devices, ordered by id', async () => {
        for (const { q, nonEmpty } of queries) {
          const want = await expected(q);
          expect(want.length > 0, JSON.stringify(q)).toBe(nonEmpty);
          expect(await store.listDevices(q), JSON.stringify(q)).toStrictEqual(want);
        }
        // the strict deadline bound, spelled out
        expect((await store.listDevices({ tenantId: tA, deadlineBefore: ts(1000), limit: 100 })).map((d) => d.id)).toStrictEqual([]);
        expect((await store.listDevices({ tenantId: tA, deadlineBefore: ts(1001), limit: 100 })).map((d) => d.id)).toStrictEqual([
          'd-01',
        ]);
      });

      it('pages a filtered listing with after/limit without gaps or repeats', async () => {
        const q: DeviceQuery = { tenantId: tA, states: ['claimed', 'configuring', 'stalled', 'registered'], limit: 2 };
        const want = (await expected({ ...q, limit: 100 })).map((d) => d.id);
        expect(want.length).toBeGreaterThan(4);
        const seen: string[] = [];
        let after: string | undefined;
        for (;;) {
          const page = await store.listDevices(after === undefined ? q : { ...q, after });
          if (page.length === 0) break;
          seen.push(...page.map((d) => d.id));
          after = page[page.length - 1]?.id;
        }
        expect(seen).toStrictEqual(want);
      });

      it('follows updates of tenant, profile, deadline and provisional window (and their removal)', async () => {
        const d = all.find((x) => x.id === 'd-01');
        if (d?.deadlineAt === undefined || d.profileId === undefined) throw new Error('seed changed');
        const { deadlineAt: _deadline, ...rest } = d;
        await store.updateDevice(
          { ...rest, tenantId: tB, profileId: 'p-moved', provisionalUntil: ts(-5000) },
          d.revision,
          [],
        );
        expect((await store.listDevices({ tenantId: tA, limit: 100 })).map((x) => x.id)).not.toContain('d-01');
        expect((await store.listDevices({ tenantId: tB, limit: 100 })).map((x) => x.id)).toContain('d-01');
        expect((await store.listDevices({ profileId: 'p-moved', limit: 100 })).map((x) => x.id)).toStrictEqual(['d-01']);
        expect((await store.listDevices({ profileId: 'p-odd', limit: 100 })).map((x) => x.id)).not.toContain('d-01');
        expect((await store.listDevices({ deadlineBefore: ts(99_000), limit: 100 })).map((x) => x.id)).not.toContain('d-01');
        expect((await store.listDevices({ provisionalBefore: ts(-4000), limit: 100 })).map((x) => x.id)).toStrictEqual([
          'd-01',
        ]);
      });

      it('countDevicesByState per tenant and overall', async () => {
        const everything = await store.listDevices({ limit: 10_000 });
        const count = (ds: DeviceRecord[]) => {
          const c: Partial<Record<Device['state'], number>> = {};
          for (const d of ds) c[d.state] = (c[d.state] ?? 0) + 1;
          return c;
        };
        expect(await store.countDevicesByState(tA)).toStrictEqual(count(all.filter((d) => d.tenantId === tA)));
        expect(await store.countDevicesByState(tB)).toStrictEqual(count(all.filter((d) => d.tenantId === tB)));
        expect(await store.countDevicesByState(DEFAULT_TENANT)).toStrictEqual({ claimed: 1 });
        expect(await store.countDevicesByState('no-such-tenant')).toStrictEqual({});
        expect(await store.countDevicesByState()).toStrictEqual(count(everything));
        expect(everything).toHaveLength(25);
      });
    });

    // ---------------------------------------------------------------------------------------------
    /** A device with `n` certificates (one bootstrap issuance, n - 1 renewals); certificates newest first. */
    async function seedIssued(n: number, certificate: (i: number) => Partial<CertificateRecord> = () => ({})) {
      const { device, token } = await seedClaimed();
      let stored = await store.commitIssuance(makeIssuanceCommit(device, { token, at: ts(10_000), certificate: certificate(0) }));
      for (let i = 1; i < n; i++) {
        stored = await store.commitIssuance(
          makeIssuanceCommit(stored, { renewal: true, at: ts(10_000 + i * 1000), certificate: certificate(i) }),
        );
      }
      return { device: stored, token, certificates: await store.listCertificates(device.id) };
    }

    describe('updateDevice extras', () => {
      it('applies certificate status changes and a new config document with the update', async () => {
        const { device, certificates } = await seedIssued(3);
        const [c3, c2, c1] = certificates;
        if (!c1 || !c2 || !c3) throw new Error('seed');
        const doc = makeConfigDocument(device.id, 2);
        const next: DeviceRecord = { ...device, state: 'revoked', revokedAt: ts(50_000), updatedAt: ts(50_000) };
        const event = makeEvent(device.id, { type: 'revoked', from: device.state, to: 'revoked', at: ts(50_000) });
        const eventsBefore = await store.listEvents(device.id);

        const stored = await store.updateDevice(next, device.revision, [event], {
          certificates: [
            { serial: c3.serial, status: 'revoked', revokedAt: ts(50_000), revocationReason: 'cessationOfOperation' },
            { serial: c1.serial, status: 'revoked', revokedAt: ts(50_000), revocationReason: 'keyCompromise' },
          ],
          configDocument: doc,
        });

        expect(stored).toStrictEqual({ ...next, revision: device.revision + 1 });
        expect(await store.getDevice(device.id)).toStrictEqual(stored);
        expect(await store.listEvents(device.id)).toStrictEqual([...eventsBefore, event]);
        const revokedC3: CertificateRecord = { ...c3, status: 'revoked', revokedAt: ts(50_000), revocationReason: 'cessationOfOperation' };
        const revokedC1: CertificateRecord = { ...c1, status: 'revoked', revokedAt: ts(50_000), revocationReason: 'keyCompromise' };
        expect(await store.listCertificates(device.id)).toStrictEqual([revokedC3, c2, revokedC1]);
        expect(await store.getCertificate(c3.serial)).toStrictEqual(revokedC3);
        expect(await store.findCertificateByKey(c1.keyFingerprint)).toStrictEqual(revokedC1);
        expect(await store.getConfigDocument(device.id, 2)).toStrictEqual(doc);
        expect(await store.listRevokedCertificates('')).toStrictEqual([revokedC1, revokedC3].sort((x, y) => (x.serial < y.serial ? -1 : 1)));
      });

      it("a change to 'superseded' stores exactly the certificate with the new status", async () => {
        const { device, certificates } = await seedIssued(1);
        const [c1] = certificates;
        if (!c1) throw new Error('seed');
        await store.updateDevice(device, device.revision, [], { certificates: [{ serial: c1.serial, status: 'superseded' }] });
        expect(await store.getCertificate(c1.serial)).toStrictEqual({ ...c1, status: 'superseded' });
      });

      it('empty extras are the same as none', async () => {
        const device = await seedDevice();
        const stored = await store.updateDevice({ ...device, state: 'claimed' }, device.revision, [], { certificates: [] });
        expect(await store.getDevice(device.id)).toStrictEqual(stored);
      });

      describe('a failing extra leaves device, events, certificates and documents untouched', () => {
        async function setup() {
          const a = await seedIssued(2);
          const b = await seedIssued(1);
          const [a2] = a.certificates;
          if (!a2) throw new Error('seed');
          const next: DeviceRecord = { ...a.device, state: 'revoked', updatedAt: ts(60_000) };
          const events = [makeEvent(a.device.id, { type: 'revoked', to: 'revoked', at: ts(60_000) })];
          const goodChange = { serial: a2.serial, status: 'revoked' as const, revokedAt: ts(60_000), revocationReason: 'unspecified' };
          const jtis = [a.token.jti, b.token.jti];
          return { a, b, next, events, goodChange, jtis, before: await fullSnapshot(jtis) };
        }

        it('CERTIFICATE_NOT_FOUND: unknown serial', async () => {
          const { a, next, events, goodChange, jtis, before } = await setup();
          await expectStoreError(
            store.updateDevice(next, a.device.revision, events, {
              certificates: [goodChange, { serial: '7fffffff', status: 'revoked', revokedAt: ts(1), revocationReason: 'unspecified' }],
              configDocument: makeConfigDocument(a.device.id, 2),
            }),
            'CERTIFICATE_NOT_FOUND',
          );
          expect(await fullSnapshot(jtis)).toStrictEqual(before);
        });

        it("CERTIFICATE_NOT_FOUND: another device's certificate", async () => {
          const { a, b, next, events, goodChange, jtis, before } = await setup();
          const [b1] = b.certificates;
          if (!b1) throw new Error('seed');
          await expectStoreError(
            store.updateDevice(next, a.device.revision, events, {
              certificates: [goodChange, { serial: b1.serial, status: 'superseded' }],
              configDocument: makeConfigDocument(a.device.id, 2),
            }),
            'CERTIFICATE_NOT_FOUND',
          );
          expect(await fullSnapshot(jtis)).toStrictEqual(before);
        });

        it('CONFIG_VERSION_EXISTS', async () => {
          const { a, next, events, goodChange, jtis, before } = await setup();
          await expectStoreError(
            store.updateDevice(next, a.device.revision, events, {
              certificates: [goodChange],
              configDocument: makeConfigDocument(a.device.id, 1),
            }),
            'CONFIG_VERSION_EXISTS',
          );
          expect(await fullSnapshot(jtis)).toStrictEqual(before);
        });

        it('REVISION_CONFLICT and DEVICE_NOT_FOUND: valid extras are not applied either', async () => {
          const { a, next, events, goodChange, jtis, before } = await setup();
          const extras = { certificates: [goodChange], configDocument: makeConfigDocument(a.device.id, 2) };
          await expectStoreError(store.updateDevice(next, a.device.revision - 1, events, extras), 'REVISION_CONFLICT');
          const ghost = makeDevice();
          await expectStoreError(
            store.updateDevice(ghost, 1, [makeEvent(ghost.id)], { configDocument: makeConfigDocument(ghost.id, 1) }),
            'DEVICE_NOT_FOUND',
          );
          expect(await fullSnapshot(jtis)).toStrictEqual(before);
          // the same update at the right revision goes through
          await store.updateDevice(next, a.device.revision, events, extras);
          expect((await store.getCertificate(goodChange.serial))?.status).toBe('revoked');
        });
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('commitIssuance: renewal, previous certificates, config versions', () => {
      it('a renewal commit without config document and without token', async () => {
        const { device, token, certificates } = await seedIssued(1);
        const [c1] = certificates;
        if (!c1) throw new Error('seed');
        const tokenBefore = await store.getBootstrapToken(token.jti);
        const doc1 = await store.getConfigDocument(device.id, 1);
        const eventsBefore = await store.listEvents(device.id);
        const renewal = makeIssuanceCommit(device, { renewal: true, at: ts(40_000) });
        expect(renewal.configDocument).toBeUndefined();
        expect(renewal.consumeToken).toBeUndefined();

        const stored = await store.commitIssuance(renewal);

        expect(stored).toStrictEqual({ ...renewal.device, revision: device.revision + 1 });
        expect(await store.getDevice(device.id)).toStrictEqual(stored);
        expect(await store.listCertificates(device.id)).toStrictEqual([renewal.certificate, { ...c1, status: 'superseded' }]);
        expect(await store.getBootstrapToken(token.jti)).toStrictEqual(tokenBefore);
        expect(await store.getConfigDocument(device.id, 1)).toStrictEqual(doc1);
        expect(await store.getConfigDocument(device.id, 2)).toBeUndefined();
        expect(await store.listEvents(device.id)).toStrictEqual([...eventsBefore, ...renewal.events]);
      });

      it("previousCertificates 'revoked': the other active certificates are revoked, superseded ones stay", async () => {
        const { device, certificates } = await seedIssued(2);
        const [c2, c1] = certificates;
        if (!c1 || !c2) throw new Error('seed');
        // re-provisioning after a factory reset: a new token, a new key, the old one presumed gone
        const token = makeBootstrapToken(device.id);
        await store.insertBootstrapToken(token);
        const commit = makeIssuanceCommit(device, {
          token,
          at: ts(70_000),
          previousCertificates: { status: 'revoked', revokedAt: ts(70_000), revocationReason: 'keyCompromise' },
        });
        await store.commitIssuance(commit);
        const revokedC2: CertificateRecord = { ...c2, status: 'revoked', revokedAt: ts(70_000), revocationReason: 'keyCompromise' };
        expect(await store.listCertificates(device.id)).toStrictEqual([commit.certificate, revokedC2, c1]);
        expect(await store.getCertificate(c2.serial)).toStrictEqual(revokedC2);
        expect(await store.listRevokedCertificates('')).toStrictEqual([revokedC2]);
        expect((await store.getBootstrapToken(token.jti))?.certificateSerial).toBe(commit.certificate.serial);
      });

      it("previousCertificates 'superseded' is the default", async () => {
        const { device, certificates } = await seedIssued(1);
        const [c1] = certificates;
        if (!c1) throw new Error('seed');
        const commit = makeIssuanceCommit(device, { renewal: true, at: ts(40_000), previousCertificates: { status: 'superseded' } });
        await store.commitIssuance(commit);
        expect(await store.listCertificates(device.id)).toStrictEqual([commit.certificate, { ...c1, status: 'superseded' }]);
        expect(await store.listRevokedCertificates('')).toStrictEqual([]);
      });

      it('the new certificate is stored active without revocation fields, whatever the caller set', async () => {
        const { device, token } = await seedClaimed();
        const commit = makeIssuanceCommit(device, {
          token,
          certificate: { status: 'revoked', revokedAt: ts(1), revocationReason: 'unspecified' },
        });
        await store.commitIssuance(commit);
        const { revokedAt: _r, revocationReason: _rr, ...plain } = commit.certificate;
        expect(await store.getCertificate(commit.certificate.serial)).toStrictEqual({ ...plain, status: 'active' });
        expect(await store.listRevokedCertificates('')).toStrictEqual([]);
      });

      it('CONFIG_VERSION_EXISTS when the config document version exists; nothing written', async () => {
        const { device } = await seedIssued(1);
        const token = makeBootstrapToken(device.id);
        await store.insertBootstrapToken(token);
        const commit = makeIssuanceCommit(device, { token, at: ts(80_000) });
        commit.configDocument = makeConfigDocument(device.id, 1);
        const before = await snapshot(commit);
        await expectStoreError(store.commitIssuance(commit), 'CONFIG_VERSION_EXISTS');
        expect(await snapshot(commit)).toStrictEqual(before);
        expect((await store.getBootstrapToken(token.jti))?.consumedAt).toBeUndefined();
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('listRevokedCertificates', () => {
      it('is [] without revoked certificates; never lists active or superseded ones', async () => {
        expect(await store.listRevokedCertificates('')).toStrictEqual([]);
        await seedIssued(2);
        expect(await store.listRevokedCertificates('')).toStrictEqual([]);
      });

      it('orders by revocation time then serial, and keeps only notAfter strictly after the bound', async () => {
        const notAfters = [ts(100_000), ts(200_000), ts(300_000), ts(400_000)];
        const a = await seedIssued(4, (i) => ({ notAfter: notAfters[i] ?? ts(0) }));
        const [a4, a3, a2, a1] = a.certificates;
        if (!a1 || !a2 || !a3 || !a4) throw new Error('seed');
        const change = (c: CertificateRecord, at: number) => ({
          serial: c.serial,
          status: 'revoked' as const,
          revokedAt: ts(at),
          revocationReason: 'keyCompromise',
        });
        await store.updateDevice(a.device, a.device.revision, [], {
          certificates: [change(a1, 20), change(a2, 20), change(a3, 10)],
        });
        // another device, revoked in between by a re-provisioning commit
        const b = await seedIssued(1);
        const [b1] = b.certificates;
        if (!b1) throw new Error('seed');
        await store.commitIssuance(
          makeIssuanceCommit(b.device, {
            renewal: true,
            at: ts(90_000),
            previousCertificates: { status: 'revoked', revokedAt: ts(15), revocationReason: 'superseded' },
          }),
        );

        const revoked = (c: CertificateRecord, at: number, reason = 'keyCompromise'): CertificateRecord => ({
          ...c,
          status: 'revoked',
          revokedAt: ts(at),
          revocationReason: reason,
        });
        const sameTime = [revoked(a1, 20), revoked(a2, 20)].sort((x, y) => (x.serial < y.serial ? -1 : 1));
        expect(await store.listRevokedCertificates('')).toStrictEqual([revoked(a3, 10), revoked(b1, 15, 'superseded'), ...sameTime]);
        // a1's notAfter equals the bound: excluded (strictly after)
        expect(await store.listRevokedCertificates(ts(100_000))).toStrictEqual([
          revoked(a3, 10),
          revoked(b1, 15, 'superseded'),
          revoked(a2, 20),
        ]);
        expect(await store.listRevokedCertificates(ts(250_000))).toStrictEqual([revoked(a3, 10), revoked(b1, 15, 'superseded')]);
        expect(await store.listRevokedCertificates(ts(10 * 365 * 86_400_000))).toStrictEqual([]);
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('tenants', () => {
      it('inserts, gets (exact round-trip), lists ordered by id', async () => {
        const b = makeTenant({ id: 'b-tenant', webhook: { url: 'https://hooks.example.com/p', secret: 's'.repeat(32) } });
        const a = makeTenant({ id: 'a-tenant' });
        const c = makeTenant({ id: 'c-tenant', provisionalWindowDays: 0 });
        for (const t of [b, c, a]) await store.insertTenant(t);
        expect(await store.getTenant('b-tenant')).toStrictEqual(b);
        expect(await store.getTenant('a-tenant')).toStrictEqual(a);
        expect(await store.getTenant('nope')).toBeUndefined();
        expect(await store.listTenants()).toStrictEqual([a, b, c]);
      });

      it('updateTenant replaces the record (a field left out is removed)', async () => {
        const t = makeTenant({ webhook: { url: 'https://hooks.example.com/p' } });
        await store.insertTenant(t);
        const { webhook: _w, ...rest } = t;
        const next = { ...rest, name: 'Renamed', provisionalWindowDays: 30 };
        await store.updateTenant(next);
        expect(await store.getTenant(t.id)).toStrictEqual(next);
        expect(await store.listTenants()).toStrictEqual([next]);
      });

      it('TENANT_EXISTS for a second tenant with the same id; the first is unchanged', async () => {
        const t = makeTenant();
        await store.insertTenant(t);
        const before = await fullSnapshot();
        await expectStoreError(store.insertTenant({ ...t, name: 'Other' }), 'TENANT_EXISTS');
        expect(await fullSnapshot()).toStrictEqual(before);
      });

      it('TENANT_NOT_FOUND when updating an unknown tenant; nothing created', async () => {
        const before = await fullSnapshot();
        await expectStoreError(store.updateTenant(makeTenant()), 'TENANT_NOT_FOUND');
        expect(await fullSnapshot()).toStrictEqual(before);
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('profiles', () => {
      it('versions 1, 2, 3: getProfile returns the latest, or the version asked for', async () => {
        const v1 = makeProfile({ role: 'lobby-camera', defaultForModels: ['camera', 'cam-2'] });
        const v2 = { ...v1, version: 2, name: 'v2', createdAt: ts(1000) };
        const { role: _role, ...v3rest } = v2;
        const v3 = { ...v3rest, version: 3, name: 'v3', reprovision: 'reset' as const, createdAt: ts(2000) };
        await store.insertProfileVersion(v1);
        expect(await store.getProfile(v1.tenantId, v1.id)).toStrictEqual(v1);
        await store.insertProfileVersion(v2);
        await store.insertProfileVersion(v3);
        expect(await store.getProfile(v1.tenantId, v1.id)).toStrictEqual(v3);
        expect(await store.getProfile(v1.tenantId, v1.id, 1)).toStrictEqual(v1);
        expect(await store.getProfile(v1.tenantId, v1.id, 2)).toStrictEqual(v2);
        expect(await store.getProfile(v1.tenantId, v1.id, 3)).toStrictEqual(v3);
        expect(await store.getProfile(v1.tenantId, v1.id, 4)).toBeUndefined();
        expect(await store.getProfile(v1.tenantId, 'no-such-profile')).toBeUndefined();
        expect(await store.getProfile('other-tenant', v1.id)).toBeUndefined();
      });

      it("listProfiles returns the latest version of each of the tenant's profiles, ordered by id", async () => {
        const tA = newTenantId();
        const tB = newTenantId();
        const insert = async (tenantId: string, id: string, versions: number) => {
          const out: ProfileRecord[] = [];
          for (let v = 1; v <= versions; v++) {
            const p = makeProfile({ tenantId, id, version: v, name: `${id} v${v}` });
            await store.insertProfileVersion(p);
            out.push(p);
          }
          return out;
        };
        const bProf = await insert(tA, 'b-prof', 2);
        const aProf = await insert(tA, 'a-prof', 1);
        const Z = await insert(tA, 'Z-prof', 3);
        const bTenant = await insert(tB, 'a-prof', 3);
        expect(await store.listProfiles(tA)).toStrictEqual([Z[2], aProf[0], bProf[1]]);
        expect(await store.listProfiles(tB)).toStrictEqual([bTenant[2]]);
        expect(await store.listProfiles('no-such-tenant')).toStrictEqual([]);
        expect(await store.getProfile(tA, 'a-prof')).toStrictEqual(aProf[0]);
      });

      it('PROFILE_VERSION_EXISTS for a version that exists; nothing written', async () => {
        const v1 = makeProfile();
        await store.insertProfileVersion(v1);
        await store.insertProfileVersion({ ...v1, version: 2 });
        const before = await fullSnapshot();
        await expectStoreError(store.insertProfileVersion({ ...v1, name: 'again' }), 'PROFILE_VERSION_EXISTS');
        await expectStoreError(store.insertProfileVersion({ ...v1, version: 2, name: 'again' }), 'PROFILE_VERSION_EXISTS');
        expect(await fullSnapshot()).toStrictEqual(before);
        expect(await store.getProfile(v1.tenantId, v1.id, 1)).toStrictEqual(v1);
      });

      it('PROFILE_VERSION_GAP when version - 1 does not exist; nothing written', async () => {
        const p = makeProfile();
        const before = await fullSnapshot();
        await expectStoreError(store.insertProfileVersion({ ...p, version: 2 }), 'PROFILE_VERSION_GAP');
        expect(await fullSnapshot()).toStrictEqual(before);
        await store.insertProfileVersion(p);
        const afterFirst = await fullSnapshot();
        await expectStoreError(store.insertProfileVersion({ ...p, version: 3 }), 'PROFILE_VERSION_GAP');
        // version 1 of the same id in another tenant does not fill the gap
        await expectStoreError(store.insertProfileVersion({ ...p, tenantId: newTenantId(), version: 2 }), 'PROFILE_VERSION_GAP');
        expect(await fullSnapshot()).toStrictEqual(afterFirst);
      });

      it('20 concurrent inserts of version n + 1: exactly one wins, the rest PROFILE_VERSION_EXISTS', async () => {
        const v1 = makeProfile();
        await store.insertProfileVersion(v1);
        await store.insertProfileVersion({ ...v1, version: 2 });
        const attempts = Array.from({ length: 20 }, (_, i) => ({ ...v1, version: 3, name: `attempt ${i}` }));
        const results = await Promise.allSettled(attempts.map((p) => store.insertProfileVersion(p)));
        const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
        expect(winners).toHaveLength(1);
        expect(results.filter((r) => codeOf(r) === 'PROFILE_VERSION_EXISTS')).toHaveLength(19);
        expect(await store.getProfile(v1.tenantId, v1.id)).toStrictEqual(attempts[winners[0] ?? -1]);
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('meta', () => {
      it('gets, sets and overwrites', async () => {
        expect(await store.getMeta('ca.generatedAt')).toBeUndefined();
        await store.setMeta('ca.generatedAt', ts());
        await store.setMeta('flag', '');
        expect(await store.getMeta('ca.generatedAt')).toBe(ts());
        expect(await store.getMeta('flag')).toBe('');
        await store.setMeta('ca.generatedAt', 'later');
        expect(await store.getMeta('ca.generatedAt')).toBe('later');
        expect(await store.getMeta('flag')).toBe('');
        // set-if-absent: the first of many concurrent writers wins, and all of them learn its value
        const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => store.setMetaIfAbsent('material.ca', `fp-${i}`)));
        expect(new Set(answers).size).toBe(1);
        expect(await store.getMeta('material.ca')).toBe(answers[0]);
        expect(await store.setMetaIfAbsent('ca.generatedAt', 'ignored')).toBe('later');
      });
    });

    // ---------------------------------------------------------------------------------------------
    // ---------------------------------------------------------------------------------------------
    describe('audit log', () => {
      /** Every page of `query` (without before/limit), following `next`. */
      async function allPages(query: Omit<AuditQuery, 'limit' | 'before'>, limit: number): Promise<AuditEntry[][]> {
        const pages: AuditEntry[][] = [];
        let before: string | undefined;
        for (;;) {
          const page = await store.listAudit({ ...query, limit, ...(before !== undefined ? { before } : {}) });
          pages.push(page.entries);
          if (page.next === undefined) return pages;
          expect(page.entries).toHaveLength(limit);
          before = page.next;
        }
      }

      it('appends entries in order and lists them newest first, exactly as given', async () => {
        const entries = [
          makeAudit({ at: ts(1), details: { profileId: 'default', profileVersion: 2, factoryIdentity: true } }),
          makeAudit({ at: ts(2), action: 'certificate.issue', serial: '1f2e', deviceId: 'dev-1', actor: 'device:dev-1' }),
          makeAudit({ at: ts(3), outcome: 'failure', errorCode: 'CLAIM_CODE_INVALID', target: 'apikey:abc' }),
        ];
        await store.appendAudit(entries.slice(0, 2));
        await store.appendAudit([entries[2]!]);
        await store.appendAudit([]);
        expect(await store.listAudit({ limit: 10 })).toStrictEqual({ entries: [...entries].reverse() });
        expect(await store.listAudit({ limit: 0 })).toStrictEqual({ entries: [] });
        expect((await store.countEntries()).auditEntries).toBe(3);
      });

      it('filters by tenant, device, action, outcome and time; pages with next (newest first, each entry once)', async () => {
        const tenants = ['t-a', 't-b', 't-c'];
        const all: AuditEntry[] = [];
        for (let i = 0; i < 700; i++) {
          all.push(
            makeAudit({
              at: ts(i * 1000),
              tenantId: tenants[i % 3]!,
              deviceId: `dev-${i % 7}`,
              action: i % 2 === 0 ? 'device.claim' : 'certificate.issue',
              outcome: i % 5 === 0 ? 'failure' : 'success',
              ...(i % 5 === 0 ? { errorCode: 'CLAIM_CODE_INVALID' } : {}),
            }),
          );
        }
        for (let i = 0; i < all.length; i += 100) await store.appendAudit(all.slice(i, i + 100));
        const newest = [...all].reverse();
        const cases: [Omit<AuditQuery, 'limit' | 'before'>, (e: AuditEntry) => boolean][] = [
          [{}, () => true],
          [{ tenantId: 't-b' }, (e) => e.tenantId === 't-b'],
          [{ deviceId: 'dev-3' }, (e) => e.deviceId === 'dev-3'],
          [{ action: 'certificate.issue' }, (e) => e.action === 'certificate.issue'],
          [{ outcome: 'failure' }, (e) => e.outcome === 'failure'],
          [{ since: ts(100_000), until: ts(200_000) }, (e) => e.at >= ts(100_000) && e.at < ts(200_000)],
          [
            { tenantId: 't-a', deviceId: 'dev-0', outcome: 'failure', action: 'device.claim' },
            (e) => e.tenantId === 't-a' && e.deviceId === 'dev-0' && e.outcome === 'failure' && e.action === 'device.claim',
          ],
          [{ tenantId: 'nobody' }, () => false],
        ];
        for (const [query, keep] of cases) {
          const want = newest.filter(keep);
          const pages = await allPages(query, 37);
          expect(pages.flat(), JSON.stringify(query)).toStrictEqual(want);
          expect(pages.length, JSON.stringify(query)).toBe(Math.floor(want.length / 37) + 1);
        }
        // a cursor that names nothing gives an empty page, never an error
        expect((await store.listAudit({ before: 'not-a-cursor', limit: 5 })).entries).toStrictEqual([]);
      });

      it('entries written with an action are part of its transaction: none when the action fails', async () => {
        const { device, token } = await seedClaimed();
        const before = await store.listAudit({ limit: 100 });
        // updateDevice: REVISION_CONFLICT
        await expectStoreError(store.updateDevice({ ...device, state: 'released' }, device.revision + 5, [], { audit: [makeAudit({ action: 'device.release' })] }), 'REVISION_CONFLICT');
        // commitIssuance: TOKEN_NOT_FOUND
        await expectStoreError(
          store.commitIssuance({ ...makeIssuanceCommit(device, { token: makeBootstrapToken(device.id) }), audit: [makeAudit({ action: 'certificate.issue' })] }),
          'TOKEN_NOT_FOUND',
        );
        // insertApiKey: API_KEY_EXISTS
        const key = makeApiKey();
        await store.insertApiKey(key);
        await expectStoreError(store.insertApiKey(key, [makeAudit({ action: 'apikey.create' })]), 'API_KEY_EXISTS');
        // deleteApiKey of a key that does not exist: nothing removed, nothing appended
        expect(await store.deleteApiKey('no-such-key', [makeAudit({ action: 'apikey.revoke' })])).toBe(false);
        expect(await store.listAudit({ limit: 100 })).toStrictEqual(before);

        // and with the action when it succeeds
        const issue = makeAudit({ action: 'certificate.issue', deviceId: device.id });
        await store.commitIssuance({ ...makeIssuanceCommit(device, { token }), audit: [issue] });
        const revoke = makeAudit({ action: 'apikey.revoke', target: `apikey:${key.id}` });
        expect(await store.deleteApiKey(key.id, [revoke])).toBe(true);
        const created = makeAudit({ action: 'apikey.create' });
        await store.insertApiKey(makeApiKey(), [created]);
        expect((await store.listAudit({ limit: 100 })).entries).toStrictEqual([created, revoke, issue]);
      });

      it('has no way to change or remove an entry (append-only interface); entries survive a restart', async () => {
        const methods = new Set<string>();
        for (let p: object | null = store; p !== null && p !== Object.prototype; p = Object.getPrototypeOf(p) as object | null) {
          for (const name of Object.getOwnPropertyNames(p)) if (/audit/i.test(name)) methods.add(name);
        }
        expect([...methods].sort()).toStrictEqual(['appendAudit', 'listAudit']);
        const entry = makeAudit();
        await store.appendAudit([entry]);
        if (harness.reopen === undefined) return;
        await store.stop();
        store = await harness.reopen();
        expect((await store.listAudit({ limit: 10 })).entries).toStrictEqual([entry]);
      });
    });

    describe('export, import and counts', () => {
      const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

      async function exportAll(s: Store = store): Promise<StoreEntry[]> {
        const out: StoreEntry[] = [];
        for await (const entry of s.exportEntries()) out.push(entry);
        return out;
      }

      function devicesOf(entries: readonly StoreEntry[]): DeviceEntry[] {
        return entries.filter((e): e is DeviceEntry => e.kind === 'device');
      }

      /** A second, empty store of the same backend, or a skipped test. */
      async function freshStore(ctx: { skip: (note?: string) => void }): Promise<Store> {
        if (harness.fresh === undefined) {
          ctx.skip('backend has no fresh()');
          throw new Error('unreachable');
        }
        return harness.fresh();
      }

      /**
       * Every kind of record: two tenants, three profile versions, two API keys, two meta keys, one
       * device with a full history (claimed, issued, renewed with the previous certificate revoked,
       * a second config document and a second bootstrap token), ids whose byte order differs from
       * a case-insensitive order, and `bulk` more devices (more than an export page when >= 500).
       */
      async function seedAll(bulk: number) {
        const tenants = [makeTenant({ id: `zz-${newTenantId()}` }), makeTenant()];
        for (const t of tenants) await store.insertTenant(t);
        const profile = makeProfile({ tenantId: tenants[0]!.id });
        const profiles = [profile, { ...profile, version: 2, name: 'second version' }, makeProfile()];
        for (const p of profiles) await store.insertProfileVersion(p);
        const apiKeys = [makeApiKey(), makeApiKey({ tenantId: tenants[0]!.id, role: 'viewer' })];
        const audit = [makeAudit({ action: 'apikey.create', target: `apikey:${apiKeys[0]!.id}` }), makeAudit({ action: 'key.generate', actor: 'system', details: { name: 'root', encrypted: true } })];
        await store.insertApiKey(apiKeys[0]!, [audit[0]!]);
        await store.insertApiKey(apiKeys[1]!);
        await store.appendAudit([audit[1]!]);
        await store.setMeta('secrets.fingerprint', 'f1');
        await store.setMeta('a.first', '1');

        const { device, token } = await seedClaimed(); // 2 events
        const issueAudit = makeAudit({ action: 'certificate.issue', deviceId: device.id, actor: `device:${device.id}`, tenantId: device.tenantId });
        const issued = await store.commitIssuance({ ...makeIssuanceCommit(device, { token, at: ts(3000) }), audit: [issueAudit] }); // +2
        audit.push(issueAudit);
        const renewed = await store.commitIssuance(
          makeIssuanceCommit(issued, {
            renewal: true,
            at: ts(4000),
            previousCertificates: { status: 'revoked', revokedAt: ts(4000), revocationReason: 'keyCompromise' },
          }),
        ); // +1
        const refused = makeAudit({ action: 'device.revoke', outcome: 'failure', errorCode: 'DEVICE_STATE_INVALID', deviceId: device.id, details: { reason: 'r', n: 1, ok: false } });
        const second = makeBootstrapToken(device.id, { issuedAt: ts(5000) });
        await store.insertBootstrapToken(second);
        const full = await store.updateDevice(
          { ...renewed, config: { version: 2, items: [{ id: 'network', required: true, status: 'pending' }] }, updatedAt: ts(5000) },
          renewed.revision,
          [makeEvent(device.id, { type: 'config_delivered', at: ts(5000) })],
          { configDocument: makeConfigDocument(device.id, 2, { createdAt: ts(5000) }), audit: [refused] },
        ); // +1
        audit.push(refused);

        const odd = [makeDevice({ id: 'Dev-Upper' }), makeDevice({ id: 'dev-lower' }), makeDevice({ id: 'dev-\u00e9t\u00e9', tenantId: tenants[0]!.id })];
        const many = Array.from({ length: bulk }, (_, i) =>
          makeDevice({
            id: `bulk-${String(i).padStart(4, '0')}`,
            tenantId: i % 2 === 0 ? DEFAULT_TENANT : tenants[1]!.id,
            state: i % 3 === 0 ? 'claimed' : 'registered',
          }),
        );
        const others = [...odd, ...many];
        if (others.length > 0) await store.insertDevices(others, others.map((d) => makeEvent(d.id))); // +1 each
        const counts: StoreCounts = {
          tenants: 2,
          profileVersions: 3,
          apiKeys: 2,
          meta: 2,
          devices: 1 + others.length,
          events: 6 + others.length,
          certificates: 2,
          configDocuments: 2,
          bootstrapTokens: 2,
          auditEntries: 4,
        };
        return { tenants, profiles, apiKeys, full, tokens: [token.jti, second.jti], others, counts, audit };
      }

      it('an empty store counts zero of everything and exports nothing', async () => {
        expect(await store.countEntries()).toStrictEqual({
          tenants: 0,
          profileVersions: 0,
          apiKeys: 0,
          meta: 0,
          devices: 0,
          events: 0,
          certificates: 0,
          configDocuments: 0,
          bootstrapTokens: 0,
          auditEntries: 0,
        });
        expect(await exportAll()).toStrictEqual([]);
        await store.importEntries([]);
        expect(await exportAll()).toStrictEqual([]);
      });

      it('countEntries counts every kind; exportEntries streams every record in a data-only order', async () => {
        const seeded = await seedAll(510);
        expect(await store.countEntries()).toStrictEqual(seeded.counts);

        const entries = await exportAll();
        const rank = { tenant: 0, profileVersion: 1, apiKey: 2, meta: 3, device: 4, audit: 5 } as const;
        const kinds = entries.map((e) => rank[e.kind]);
        expect(kinds).toStrictEqual([...kinds].sort((a, b) => a - b));

        expect(entries.flatMap((e) => (e.kind === 'tenant' ? [e.tenant] : []))).toStrictEqual(await store.listTenants());
        expect(entries.flatMap((e) => (e.kind === 'profileVersion' ? [e.profile] : []))).toStrictEqual(
          [...seeded.profiles].sort((a, b) => byteOrder(a.tenantId, b.tenantId) || byteOrder(a.id, b.id) || a.version - b.version),
        );
        expect(entries.flatMap((e) => (e.kind === 'apiKey' ? [e.apiKey] : []))).toStrictEqual(
          [...seeded.apiKeys].sort((a, b) => byteOrder(a.id, b.id)),
        );
        expect(entries.flatMap((e) => (e.kind === 'meta' ? [[e.key, e.value]] : []))).toStrictEqual([
          ['a.first', '1'],
          ['secrets.fingerprint', 'f1'],
        ]);

        const devices = devicesOf(entries);
        const ids = devices.map((d) => d.device.id);
        expect(ids).toStrictEqual([...ids].sort(byteOrder));
        expect(ids.indexOf('Dev-Upper')).toBeLessThan(ids.indexOf('bulk-0000'));
        expect(ids.indexOf('dev-lower')).toBeLessThan(ids.indexOf('dev-\u00e9t\u00e9'));
        expect(devices.map((d) => d.device)).toStrictEqual(await store.listDevices({ limit: 10_000 }));
        for (const d of devices) expect(d.events).toStrictEqual(await store.listEvents(d.device.id));

        const full = devices.find((d) => d.device.id === seeded.full.id)!;
        expect(full.device).toStrictEqual(seeded.full);
        // certificates in the order they were stored: the first (revoked by the renewal), then the active one
        expect(full.certificates.map((c) => c.status)).toStrictEqual(['revoked', 'active']);
        expect(full.certificates).toStrictEqual([...(await store.listCertificates(seeded.full.id))].reverse());
        expect(full.configDocuments.map((c) => c.version)).toStrictEqual([1, 2]);
        for (const doc of full.configDocuments) expect(doc).toStrictEqual(await store.getConfigDocument(doc.deviceId, doc.version));
        expect(full.bootstrapTokens.map((t) => t.jti)).toStrictEqual([...seeded.tokens].sort(byteOrder));
        for (const t of full.bootstrapTokens) expect(t).toStrictEqual(await store.getBootstrapToken(t.jti));
        expect(full.bootstrapTokens.filter((t) => t.consumedAt !== undefined)).toHaveLength(1);

        // the audit log last, in the order it was appended
        expect(entries.flatMap((e) => (e.kind === 'audit' ? [e.entry] : []))).toStrictEqual(seeded.audit);

        // deterministic: the same store exports the same entries again
        expect(await exportAll()).toStrictEqual(entries);
      });

      it('round trip: an export imported into an empty store of the same kind is the same store, indexes included', async (ctx) => {
        const seeded = await seedAll(510);
        const target = await freshStore(ctx);
        const entries = await exportAll();
        for (let i = 0; i < entries.length; i += 97) await target.importEntries(entries.slice(i, i + 97));

        expect(await exportAll(target)).toStrictEqual(entries);
        expect(await target.countEntries()).toStrictEqual(seeded.counts);
        // every read path of the Store interface sees the same data
        const tenantIds = [DEFAULT_TENANT, ...seeded.tenants.map((t) => t.id)];
        expect(await target.countDevicesByState()).toStrictEqual(await store.countDevicesByState());
        for (const t of tenantIds) {
          expect(await target.countDevicesByState(t)).toStrictEqual(await store.countDevicesByState(t));
          expect(await target.listDevices({ tenantId: t, state: 'claimed', limit: 1000 })).toStrictEqual(
            await store.listDevices({ tenantId: t, state: 'claimed', limit: 1000 }),
          );
          expect(await target.listProfiles(t)).toStrictEqual(await store.listProfiles(t));
          expect(await target.listApiKeys(t)).toStrictEqual(await store.listApiKeys(t));
        }
        for (const p of seeded.profiles) {
          expect(await target.getProfile(p.tenantId, p.id)).toStrictEqual(await store.getProfile(p.tenantId, p.id));
          expect(await target.getProfile(p.tenantId, p.id, p.version)).toStrictEqual(p);
        }
        expect(await target.countApiKeys()).toBe(2);
        expect(await target.getMeta('secrets.fingerprint')).toBe('f1');
        const { full } = seeded;
        expect(await target.findDeviceByClaimCodeHash(full.claimCodeHash)).toStrictEqual(full);
        expect(await target.listCertificates(full.id)).toStrictEqual(await store.listCertificates(full.id));
        for (const c of await store.listCertificates(full.id)) {
          expect(await target.findCertificateByKey(c.keyFingerprint)).toStrictEqual(c);
        }
        expect(await target.listRevokedCertificates('')).toStrictEqual(await store.listRevokedCertificates(''));
        for (const jti of seeded.tokens) expect(await target.getBootstrapToken(jti)).toStrictEqual(await store.getBootstrapToken(jti));
        expect((await target.listAudit({ limit: 100 })).entries).toStrictEqual([...seeded.audit].reverse());
        expect((await target.listAudit({ deviceId: full.id, limit: 100 })).entries).toStrictEqual((await store.listAudit({ deviceId: full.id, limit: 100 })).entries);

        // and the imported store keeps working: revisions, uniqueness and key indexes hold
        await expectStoreError(target.updateDevice(full, full.revision - 1, []), 'REVISION_CONFLICT');
        await expectStoreError(target.insertDevice(makeDevice({ claimCodeHash: full.claimCodeHash }), []), 'CLAIM_CODE_IN_USE');
        const active = (await target.listCertificates(full.id))[0]!;
        const claimedOther = seeded.others.find((d) => d.state === 'claimed')!;
        await expectStoreError(
          target.commitIssuance(makeIssuanceCommit(claimedOther, { certificate: { keyFingerprint: active.keyFingerprint } })),
          'KEY_IN_USE',
        );
        await expectStoreError(
          target.commitIssuance(makeIssuanceCommit(full, { token: { ...makeBootstrapToken(full.id), jti: seeded.tokens[0]! } })),
          'TOKEN_USED',
        );
        const [profile] = seeded.profiles;
        await expectStoreError(target.insertProfileVersion({ ...profile!, version: 2 }), 'PROFILE_VERSION_EXISTS');
        await target.insertProfileVersion({ ...profile!, version: 3 });
        expect((await target.getProfile(profile!.tenantId, profile!.id))?.version).toBe(3);
        const updated = await target.updateDevice({ ...full, state: 'provisioned' }, full.revision, []);
        expect(updated.revision).toBe(full.revision + 1);
        expect((await target.countDevicesByState(full.tenantId)).provisioned).toBe(1);
      });

      it('IMPORT_CONFLICT for a record that exists or repeats in the batch; nothing of the batch is written', async () => {
        const seeded = await seedAll(3);
        const before = await exportAll();
        const countsBefore = await store.countEntries();
        const existing = devicesOf(before).find((d) => d.device.id === seeded.full.id)!;
        const cert = existing.certificates[0]!;

        const newDevice = (over: Partial<DeviceEntry> = {}): DeviceEntry => {
          const device = makeDevice();
          return { kind: 'device', device, events: [makeEvent(device.id)], certificates: [], configDocuments: [], bootstrapTokens: [], ...over };
        };
        const withDevice = (device: DeviceRecord, over: Partial<DeviceEntry>): DeviceEntry => ({ ...newDevice(), device, events: [], ...over });
        const other = makeDevice();
        const newTenant: StoreEntry = { kind: 'tenant', tenant: makeTenant() };
        const cases: [string, StoreEntry[], string][] = [
          ['tenant', [{ kind: 'tenant', tenant: { ...seeded.tenants[0]!, name: 'changed' } }], 'tenant'],
          ['profile version', [{ kind: 'profileVersion', profile: { ...seeded.profiles[1]!, name: 'changed' } }], 'profile version'],
          ['API key', [{ kind: 'apiKey', apiKey: { ...seeded.apiKeys[0]!, name: 'changed' } }], 'API key'],
          ['meta key', [{ kind: 'meta', key: 'a.first', value: 'changed' }], 'meta key'],
          ['device id', [withDevice({ ...existing.device, claimCodeHash: claimCodeHash() }, {})], 'device'],
          ['claim code', [withDevice(makeDevice({ claimCodeHash: existing.device.claimCodeHash }), {})], 'claim code of device'],
          ['certificate serial', [withDevice(other, { certificates: [{ ...cert, deviceId: other.id, keyFingerprint: 'f'.repeat(64) }] })], 'certificate'],
          [
            'key of another device',
            [withDevice(other, { certificates: [makeCertificate(other.id, { keyFingerprint: cert.keyFingerprint })] })],
            'certificate key fingerprint',
          ],
          ['bootstrap token', [withDevice(other, { bootstrapTokens: [{ ...makeBootstrapToken(other.id), jti: seeded.tokens[0]! }] })], 'bootstrap token'],
          ['tenant twice in the batch', [newTenant, newTenant], 'tenant'],
          ['device twice in the batch', [withDevice(other, {}), withDevice(other, {})], 'device'],
          [
            'one key for two devices of the batch',
            [other, makeDevice()].map((d) => withDevice(d, { certificates: [makeCertificate(d.id, { keyFingerprint: 'e'.repeat(64) })] })),
            'certificate key fingerprint',
          ],
        ];
        for (const [name, conflicting, kind] of cases) {
          // new records first: a backend that wrote as it went would leave them behind
          const batch: StoreEntry[] = [
            { kind: 'tenant', tenant: makeTenant() },
            { kind: 'meta', key: `new-${name}`, value: 'v' },
            { kind: 'audit', entry: makeAudit() },
            newDevice(),
            ...conflicting,
          ];
          const err = await expectStoreError(store.importEntries(batch), 'IMPORT_CONFLICT');
          expect(err.details, name).toMatchObject({ kind });
          expect(await store.countEntries(), name).toStrictEqual(countsBefore);
          expect(await exportAll(), name).toStrictEqual(before);
        }
        expect(await store.countDevicesByState()).toStrictEqual({ identity_issued: 1, claimed: 1, registered: 5 });
      });

      it('importEntries of another device\'s records in a device entry is a programming error; nothing written', async () => {
        const countsBefore = await store.countEntries();
        const device = makeDevice();
        const entry: DeviceEntry = {
          kind: 'device',
          device,
          events: [makeEvent(device.id)],
          certificates: [makeCertificate('someone-else')],
          configDocuments: [],
          bootstrapTokens: [],
        };
        await expectProgrammingError(store.importEntries([entry]), /someone-else/);
        expect(await store.countEntries()).toStrictEqual(countsBefore);
      });

      it('copyStore copies into an empty store and verifies; a non-empty target is refused and left unchanged', async (ctx) => {
        const seeded = await seedAll(20);
        const target = await freshStore(ctx);
        const progress: CopyProgress[] = [];
        const result = await copyStore(store, target, { batchSize: 7, onProgress: (p) => progress.push(p) });
        expect(result.counts).toStrictEqual(seeded.counts);
        expect(result.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
        expect((await digestStore(store)).digest).toBe(result.digest);
        expect((await digestStore(target)).digest).toBe(result.digest);
        expect(progress.length).toBeGreaterThan(1);
        expect(progress.at(-1)!.copied).toStrictEqual(seeded.counts);
        expect(progress.at(-1)!.total).toStrictEqual(seeded.counts);

        const before = await exportAll(target);
        const err = await expectStoreError(copyStore(store, target), 'TARGET_NOT_EMPTY');
        expect(err.message).toContain(`devices=${seeded.counts.devices}`);
        expect(await exportAll(target)).toStrictEqual(before);
        // the digest sees any difference
        await target.setMeta('a.first', '2');
        expect((await digestStore(target)).digest).not.toBe(result.digest);
      });

      it('copyStore fails with COPY_MISMATCH when the source changes during the copy', async (ctx) => {
        await seedAll(30);
        const target = await freshStore(ctx);
        let write: Promise<void> | undefined;
        const err = await expectStoreError(
          copyStore(store, target, {
            batchSize: 5,
            // meta is exported before the devices: a key added now is missed by the copy
            onProgress: ({ copied }) => {
              if (copied.devices > 0) write ??= store.setMeta('late.key', 'x');
            },
          }),
          'COPY_MISMATCH',
        );
        await write;
        expect(err.message).toMatch(/meta: source 3, exported 2/);
      });
    });

    describe('lifecycle', () => {
      it('stop() is idempotent; a stopped store rejects with STORE_UNAVAILABLE', async () => {
        await store.stop();
        await store.stop();
        await expectStoreError(store.getDevice('x'), 'STORE_UNAVAILABLE');
        await expectStoreError(store.insertDevice(makeDevice(), []), 'STORE_UNAVAILABLE');
        await expectStoreError(store.setMeta('k', 'v'), 'STORE_UNAVAILABLE');
        await expectStoreError(store.listDevices({ tenantId: 't', states: ['claimed'], limit: 10 }), 'STORE_UNAVAILABLE');
        await expectStoreError(store.countDevicesByState('t'), 'STORE_UNAVAILABLE');
        await expectStoreError(store.listRevokedCertificates(''), 'STORE_UNAVAILABLE');
        await expectStoreError(store.insertTenant(makeTenant()), 'STORE_UNAVAILABLE');
        await expectStoreError(store.getTenant('t'), 'STORE_UNAVAILABLE');
        await expectStoreError(store.updateTenant(makeTenant()), 'STORE_UNAVAILABLE');
        await expectStoreError(store.listTenants(), 'STORE_UNAVAILABLE');
        await expectStoreError(store.insertProfileVersion(makeProfile()), 'STORE_UNAVAILABLE');
        await expectStoreError(store.getProfile('t', 'p'), 'STORE_UNAVAILABLE');
        await expectStoreError(store.listProfiles('t'), 'STORE_UNAVAILABLE');
        await expectStoreError(store.listApiKeys('t'), 'STORE_UNAVAILABLE');
        await expectStoreError(store.deleteApiKey('k'), 'STORE_UNAVAILABLE');
      });

      it('persists committed data across stop() and a fresh store on the same data', async (ctx) => {
        const reopen = harness.reopen;
        if (reopen === undefined) return ctx.skip('backend has no reopen()');
        const { device, token } = await seedClaimed();
        const commit = makeIssuanceCommit(device, { token });
        const stored = await store.commitIssuance(commit);
        const key = makeApiKey({ tenantId: 'tenant-p' });
        await store.insertApiKey(key);
        await store.setMeta('schema.note', 'kept');
        await store.insertTenant(makeTenant({ id: 'tenant-p' }));
        const profile = makeProfile({ tenantId: 'tenant-p' });
        await store.insertProfileVersion(profile);
        await store.insertProfileVersion({ ...profile, version: 2 });
        const renewed = await store.commitIssuance(
          makeIssuanceCommit(stored, {
            renewal: true,
            previousCertificates: { status: 'revoked', revokedAt: ts(5), revocationReason: 'keyCompromise' },
          }),
        );
        const before = await snapshot(commit);
        const all = await store.listDevices({ limit: 10 });
        await store.stop();

        store = await reopen();
        expect(await snapshot(commit)).toStrictEqual(before);
        expect(await store.getDevice(device.id)).toStrictEqual(renewed);
        expect(await store.listDevices({ limit: 10 })).toStrictEqual(all);
        expect(await store.listDevices({ tenantId: DEFAULT_TENANT, states: ['identity_issued'], limit: 10 })).toStrictEqual([
          renewed,
        ]);
        expect(await store.findDeviceByClaimCodeHash(device.claimCodeHash)).toStrictEqual(renewed);
        expect(await store.getApiKey(key.id)).toStrictEqual(key);
        expect(await store.listApiKeys('tenant-p')).toStrictEqual([key]);
        expect(await store.getProfile('tenant-p', profile.id)).toStrictEqual({ ...profile, version: 2 });
        expect((await store.listRevokedCertificates('')).map((c) => c.serial)).toStrictEqual([commit.certificate.serial]);
        expect(await store.getMeta('schema.note')).toBe('kept');
        // and it is writable
        await store.updateDevice(renewed, renewed.revision, []);
        await expectStoreError(store.commitIssuance(makeIssuanceCommit(renewed, { token })), 'REVISION_CONFLICT');
      });
    });
  });
}
