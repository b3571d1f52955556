import { describe, expect, it } from 'vitest';
import { LifecycleError, assertTransition, canTransition, maySubscribe, publishTarget, roleAllows, transitionTable } from '../../src/policy/index.js';
import { ManualClock } from '../helpers/clock.js';

describe('topic policy', () => {
  it('a bootstrap session may only send its CSR and hear the answers', () => {
    expect(publishTarget('bootstrap', 'd1', 'devices/d1/csr')).toBe('csr');
    expect(publishTarget('bootstrap', 'd1', 'devices/d1/config/ack')).toBeUndefined();
    expect(publishTarget('bootstrap', 'd1', 'devices/d2/csr')).toBeUndefined();
    expect(maySubscribe('bootstrap', 'd1', 'devices/d1/csr/accepted')).toBe(true);
    expect(maySubscribe('bootstrap', 'd1', 'devices/d1/config')).toBe(false);
  });

  it('an operational session acknowledges and reports, only under its own id', () => {
    expect(publishTarget('operational', 'd1', 'devices/d1/config/ack')).toBe('config/ack');
    expect(publishTarget('operational', 'd1', 'devices/d1/telemetry')).toBe('telemetry');
    expect(publishTarget('operational', 'd1', 'devices/d1/csr')).toBe('csr'); // renewal
    expect(publishTarget('renewal', 'd1', 'devices/d1/csr')).toBe('csr');
    expect(publishTarget('renewal', 'd1', 'devices/d1/telemetry')).toBeUndefined();
    expect(maySubscribe('renewal', 'd1', 'devices/d1/config')).toBe(false);
    expect(maySubscribe('operational', 'd1', 'devices/d1/commands')).toBe(true);
    expect(publishTarget('operational', 'd1', 'devices/d1/config')).toBeUndefined();
    expect(publishTarget('operational', 'd1', 'devices/d10/telemetry')).toBeUndefined();
    expect(publishTarget('operational', 'd1', 'devices/d1/telemetry/x')).toBeUndefined();
    expect(publishTarget('operational', 'd1', '$SYS/x')).toBeUndefined();
  });

  it('subscriptions must be exact own topics', () => {
    for (const f of ['devices/d1/#', 'devices/+/config', '#', '+/d1/config', '$SYS/#', 'devices/d2/config', 'devices/d1/config/+']) {
      expect(maySubscribe('operational', 'd1', f)).toBe(false);
    }
    for (const f of ['devices/d1/config', 'devices/d1/state', 'devices/d1/errors']) expect(maySubscribe('operational', 'd1', f)).toBe(true);
  });
});

describe('lifecycle', () => {
  it('allows the provisioning path and refuses skipping it', () => {
    const path = ['registered', 'claimed', 'identity_issued', 'configuring', 'provisioned'] as const;
    for (let i = 1; i < path.length; i++) expect(canTransition(path[i - 1]!, path[i]!)).toBe(true);
    expect(canTransition('registered', 'provisioned')).toBe(false);
    expect(canTransition('decommissioned', 'registered')).toBe(false);
    expect(() => assertTransition('registered', 'identity_issued')).toThrow(LifecycleError);
    try {
      assertTransition('revoked', 'provisioned');
    } catch (err) {
      expect((err as LifecycleError).code).toBe('ILLEGAL_TRANSITION');
      expect((err as LifecycleError).status).toBe(409);
    }
  });

  it('decommissioned is terminal and every state can reach it except itself', () => {
    const table = transitionTable();
    expect(table.decommissioned).toEqual([]);
    for (const [from, tos] of Object.entries(table)) if (from !== 'decommissioned') expect(tos).toContain('decommissioned');
  });
});

describe('roles', () => {
  it('gives each role only its operations', () => {
    expect(roleAllows('factory', 'device.register')).toBe(true);
    expect(roleAllows('factory', 'device.claim')).toBe(false);
    expect(roleAllows('installer', 'device.claim')).toBe(true);
    expect(roleAllows('installer', 'device.register')).toBe(false);
    expect(roleAllows('installer', 'device.release')).toBe(true);
    expect(roleAllows('installer', 'device.admin')).toBe(false);
    expect(roleAllows('viewer', 'device.read')).toBe(true);
    expect(roleAllows('viewer', 'report.read')).toBe(true);
    expect(roleAllows('viewer', 'apikey.manage')).toBe(false);
    expect(roleAllows('hub', 'device.register')).toBe(false);
    expect(roleAllows('admin', 'apikey.manage')).toBe(true);
    expect(roleAllows('admin', 'profile.write')).toBe(true);
    expect(roleAllows('factory', 'profile.write')).toBe(false);
  });
});
