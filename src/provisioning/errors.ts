import { errorFamily } from '../errors.js';

/** Errors of the provisioning use-cases, shared by the HTTP API and the MQTT broker. */
export const ProvisioningError = errorFamily('ProvisioningError', {
  DEVICE_NOT_FOUND: { status: 404, description: 'No device with this id.' },
  DEVICE_EXISTS: { status: 409, description: 'A device with this id is already registered.' },
  CLAIM_CODE_IN_USE: { status: 409, description: 'Another device already has this claim code.' },
  CLAIM_CODE_TOO_SHORT: { status: 400, description: 'A claim code needs at least 8 letters or digits.' },
  CLAIM_CODE_INVALID: { status: 403, description: 'The claim code does not match a claimable device.' },
  CLAIM_RATE_LIMITED: { status: 429, description: 'Too many wrong claim codes; retry later.' },
  DEVICE_ALREADY_CLAIMED: { status: 409, description: 'The device is already claimed.' },
  NETWORK_SECRET_REQUIRED: { status: 400, description: 'network.wifi.secret is required unless wifi.security is "open".' },
  TOKEN_INVALID: { status: 401, description: 'The bootstrap credential is not valid.' },
  TOKEN_EXPIRED: { status: 401, description: 'The bootstrap credential has expired.' },
  TOKEN_USED: { status: 401, description: 'The bootstrap credential was already used.' },
  CLIENT_ID_MISMATCH: { status: 401, description: 'The MQTT client id must be the device id of the credential.' },
  CERTIFICATE_UNTRUSTED: { status: 401, description: 'The client certificate does not chain to this service CA.' },
  CERTIFICATE_UNKNOWN: { status: 401, description: 'The client certificate is not a current identity of its device.' },
  CERTIFICATE_EXPIRED: { status: 401, description: 'The client certificate has expired.' },
  DEVICE_STATE_INVALID: { status: 409, description: 'The device is not in a state that allows this step.' },
  MALFORMED_JSON: { status: 400, description: 'The payload is not valid JSON.' },
  SCHEMA_INVALID: { status: 400, description: 'The payload does not match its schema.' },
  PAYLOAD_TOO_LARGE: { status: 413, description: 'The payload exceeds the size limit.' },
  KEY_IN_USE: { status: 409, description: "The CSR's public key is already certified for another device." },
  CONFIG_VERSION_UNKNOWN: { status: 409, description: 'No configuration with this version was sent to the device.' },
  CONFIG_VERSION_STALE: { status: 409, description: 'The acknowledged configuration version has been superseded.' },
  CONFIG_ITEM_UNKNOWN: { status: 400, description: 'The acknowledged item is not part of this configuration version.' },
  TOPIC_FORBIDDEN: { status: 403, description: 'This client may not use this topic.' },
  AUTH_REQUIRED: { status: 401, description: 'An API key is required (Authorization: Bearer <key>).' },
  AUTH_INVALID: { status: 401, description: 'The API key is not valid.' },
  ROLE_FORBIDDEN: { status: 403, description: "The API key's role does not allow this operation." },
  ISSUANCE_CONFLICT: { status: 503, description: 'The device changed while its certificate was issued; retry.' },
});
export type ProvisioningError = InstanceType<typeof ProvisioningError>;
