/**
 * The device lifecycle as one explicit state machine. Every state change in provisiond goes
 * through `transition()`, which refuses moves the table does not list.
 */
import type { DeviceState } from '../../schemas/types.js';
import { errorFamily } from '../errors.js';

export const LifecycleError = errorFamily('LifecycleError', {
  ILLEGAL_TRANSITION: { status: 409, description: 'The device is not in a state that allows this operation.' },
});
export type LifecycleError = InstanceType<typeof LifecycleError>;

const TRANSITIONS: Record<DeviceState, readonly DeviceState[]> = {
  registered: ['claimed', 'decommissioned'],
  claimed: ['identity_issued', 'stalled', 'released', 'decommissioned'],
  // -> claimed: re-provisioning after a factory reset (a new bootstrap credential)
  identity_issued: ['configuring', 'provisioned', 'stalled', 'claimed', 'released', 'revoked', 'failed', 'decommissioned'],
  configuring: ['provisioned', 'stalled', 'failed', 'claimed', 'released', 'revoked', 'decommissioned'],
  provisioned: ['configuring', 'failed', 'claimed', 'released', 'revoked', 'decommissioned'],
  stalled: ['provisioned', 'failed', 'claimed', 'released', 'revoked', 'decommissioned'],
  failed: ['configuring', 'provisioned', 'claimed', 'released', 'revoked', 'decommissioned'],
  // a released device is back in the unclaimed pool: a new claim starts a new provisional window
  released: ['claimed', 'decommissioned'],
  revoked: ['decommissioned'],
  decommissioned: [],
};

/** States in which the device holds (or is getting) an identity and works towards provisioned. */
export const ACTIVE_STATES: readonly DeviceState[] = ['claimed', 'identity_issued', 'configuring', 'provisioned', 'stalled', 'failed'];
/** States a deadline applies to: claimed and not yet provisioned. */
export const PENDING_STATES: readonly DeviceState[] = ['claimed', 'identity_issued', 'configuring'];

export function canTransition(from: DeviceState, to: DeviceState): boolean {
  return TRANSITIONS[from].includes(to);
}

export function assertTransition(from: DeviceState, to: DeviceState): void {
  if (!canTransition(from, to)) {
    throw new LifecycleError('ILLEGAL_TRANSITION', `a device in state ${from} cannot become ${to}`, {
      details: { from, to },
    });
  }
}

export function transitionTable(): Readonly<Record<DeviceState, readonly DeviceState[]>> {
  return TRANSITIONS;
}
