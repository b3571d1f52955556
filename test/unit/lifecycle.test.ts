/** The lifecycle state machine, checked against its documented diagram, pair by pair. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { DeviceState } from '../../schemas/types.js';
import { ACTIVE_STATES, LifecycleError, PENDING_STATES, assertTransition, canTransition, transitionTable } from '../../src/policy/index.js';

const STATES = Object.keys(transitionTable()) as DeviceState[];
const documented = new Set(
  [...readFileSync(new URL('../../docs/lifecycle.md', import.meta.url), 'utf8').matchAll(/^ {2}([a-z_]+) --> ([a-z_]+)$/gm)].map((m) => `${m[1]}->${m[2]}`),
);

describe('lifecycle', () => {
  it('has the ten states of the issue', () => {
    expect(STATES.sort()).toEqual(['claimed', 'configuring', 'decommissioned', 'failed', 'identity_issued', 'provisioned', 'registered', 'released', 'revoked', 'stalled']);
  });

  it('allows exactly the transitions docs/lifecycle.md draws, and refuses every other pair with ILLEGAL_TRANSITION', () => {
    let allowed = 0;
    for (const from of STATES) {
      for (const to of STATES) {
        const ok = documented.has(`${from}->${to}`);
        expect(canTransition(from, to), `${from} -> ${to}`).toBe(ok);
        if (ok) {
          allowed++;
          expect(() => assertTransition(from, to)).not.toThrow();
        } else {
          try {
            assertTransition(from, to);
            throw new Error(`${from} -> ${to} was allowed`);
          } catch (err) {
            expect(err).toBeInstanceOf(LifecycleError);
            expect((err as LifecycleError).code).toBe('ILLEGAL_TRANSITION');
            expect((err as LifecycleError).status).toBe(409);
          }
        }
      }
    }
    expect(allowed).toBe(documented.size);
  });

  it('has no self-transitions, a terminal decommissioned, and revoked only to decommissioned', () => {
    for (const s of STATES) expect(canTransition(s, s)).toBe(false);
    expect(transitionTable().decommissioned).toEqual([]);
    expect(transitionTable().revoked).toEqual(['decommissioned']);
    for (const s of STATES) if (s !== 'decommissioned') expect(canTransition(s, 'decommissioned'), s).toBe(true);
  });

  it('names the states deadlines apply to, and those with an owner', () => {
    expect([...PENDING_STATES]).toEqual(['claimed', 'identity_issued', 'configuring']);
    for (const s of PENDING_STATES) expect(canTransition(s, 'stalled')).toBe(true);
    expect(ACTIVE_STATES).not.toContain('released');
    for (const s of ACTIVE_STATES) expect(canTransition(s, 'released'), s).toBe(true);
  });
});
