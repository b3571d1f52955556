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
import type {
  BootstrapTokenRecord,
  CertificateRecord,
  DeviceRecord,
  IssuanceCommit,
  Store,
} from '../../src/store/types.js';
import type { Device, DeviceEvent } from '../../schemas/types.js';
import {
  makeApiKey,
  makeBootstrapToken,
  makeCertificate,
  makeClaimedDevice,
  makeConfigDocument,
  makeDevice,
  makeEvent,
  makeIssuanceCommit,
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
}

export type StoreFactory = () => Promise<StoreHarness>;

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
      return {
        perDevice,
        tokens: await Promise.all(jtis.map((jti) => store.getBootstrapToken(jti))),
        certificate: await store.getCertificate(commit.certificate.serial),
        byKey: await store.findCertificateByKey(commit.certificate.keyFingerprint),
        configDocument: await store.getConfigDocument(commit.configDocument.deviceId, commit.configDocument.version),
        counts: await store.countDevicesByState(),
      };
    }

    // ---------------------------------------------------------------------------------------------
    describe('devices', () => {
      it('round-trips a device exactly, every optional field included', async () => {
        const device = makeClaimedDevice({
          identityIssuedAt: ts(2000),
          provisionedAt: ts(3000),
          certificateSerial: '1f2e3d4c5b6a',
          config: {
            version: 3,
            items: [
              { id: 'network', required: true, status: 'applied', ackedAt: ts(2500) },
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
        const { owner: _owner, claimNetwork: _net, ...rest } = device;
        const stored = await store.updateDevice({ ...rest, state: 'released' }, device.revision, []);
        expect(stored).not.toHaveProperty('owner');
        expect(stored).not.toHaveProperty('claimNetwork');
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
        expect(await store.getConfigDocument(device.id, commit.configDocument.version)).toStrictEqual(
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
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('lifecycle', () => {
      it('stop() is idempotent; a stopped store rejects with STORE_UNAVAILABLE', async () => {
        await store.stop();
        await store.stop();
        await expectStoreError(store.getDevice('x'), 'STORE_UNAVAILABLE');
        await expectStoreError(store.insertDevice(makeDevice(), []), 'STORE_UNAVAILABLE');
        await expectStoreError(store.setMeta('k', 'v'), 'STORE_UNAVAILABLE');
      });

      it('persists committed data across stop() and a fresh store on the same data', async (ctx) => {
        const reopen = harness.reopen;
        if (reopen === undefined) return ctx.skip('backend has no reopen()');
        const { device, token } = await seedClaimed();
        const commit = makeIssuanceCommit(device, { token });
        const stored = await store.commitIssuance(commit);
        const key = makeApiKey();
        await store.insertApiKey(key);
        await store.setMeta('schema.note', 'kept');
        const before = await snapshot(commit);
        const all = await store.listDevices({ limit: 10 });
        await store.stop();

        store = await reopen();
        expect(await snapshot(commit)).toStrictEqual(before);
        expect(await store.getDevice(device.id)).toStrictEqual(stored);
        expect(await store.listDevices({ limit: 10 })).toStrictEqual(all);
        expect(await store.findDeviceByClaimCodeHash(device.claimCodeHash)).toStrictEqual(stored);
        expect(await store.getApiKey(key.id)).toStrictEqual(key);
        expect(await store.getMeta('schema.note')).toBe('kept');
        // and it is writable
        await store.updateDevice(stored, stored.revision, []);
        await expectStoreError(store.commitIssuance(makeIssuanceCommit(stored, { token })), 'REVISION_CONFLICT');
      });
    });
  });
}
