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
  claimed: ['identity_issued', 'released', 'decommissioned'],
  identity_issued: ['configuring', 'provisioned', 'released', 'revoked', 'failed', 'decommissioned'],
  configuring: ['provisioned', 'stalled', 'failed', 'released', 'revoked', 'decommissioned'],
  provisioned: ['configuring', 'released', 'revoked', 'decommissioned'],
  stalled: ['configuring', 'provisioned', 'failed', 'released', 'revoked', 'decommissioned'],
  failed: ['configuring', 'released', 'revoked', 'decommissioned'],
  released: ['claimed', 'decommissioned'],
  revoked: ['decommissioned'],
  decommissioned: [],
};

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
