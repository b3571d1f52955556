/**
 * The broker's one translation point from coded errors to what MQTT 3.1.1 can say: a CONNACK
 * return code while connecting, or a JSON error (schemas/mqtt-error.json) on the device's
 * csr/rejected or errors topic once connected.
 */
import type { MqttError } from '../../schemas/types.js';

/** CONNACK return codes of MQTT 3.1.1. */
export const CONNACK = {
  IDENTIFIER_REJECTED: 2,
  SERVER_UNAVAILABLE: 3,
  BAD_USERNAME_OR_PASSWORD: 4,
  NOT_AUTHORIZED: 5,
} as const;

export function connackFor(code: string): 2 | 3 | 4 | 5 {
  switch (code) {
    case 'CLIENT_ID_MISMATCH':
      return CONNACK.IDENTIFIER_REJECTED;
    case 'TOKEN_INVALID':
    case 'TOKEN_EXPIRED':
    case 'TOKEN_USED':
      return CONNACK.BAD_USERNAME_OR_PASSWORD;
    case 'STORE_UNAVAILABLE':
    case 'SERVICE_STOPPING':
      return CONNACK.SERVER_UNAVAILABLE;
    default:
      return CONNACK.NOT_AUTHORIZED;
  }
}

export function errorPayload(err: { code: string; message: string }, extra: { requestId?: string; topic?: string } = {}): Buffer {
  const body: MqttError = { code: err.code, message: err.message };
  if (extra.requestId !== undefined) body.requestId = extra.requestId;
  if (extra.topic !== undefined) body.topic = extra.topic;
  return Buffer.from(JSON.stringify(body));
}
