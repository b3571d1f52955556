import { errorFamily } from '../errors.js';

export const StoreError = errorFamily('StoreError', {
  DEVICE_EXISTS: { status: 409, description: 'A device with this id is already registered.' },
  CLAIM_CODE_IN_USE: { status: 409, description: 'Another device already has this claim code.' },
  DEVICE_NOT_FOUND: { status: 404, description: 'No device with this id.' },
  REVISION_CONFLICT: { status: 409, description: 'The device changed concurrently; retry.' },
  TOKEN_EXISTS: { status: 409, description: 'A bootstrap token with this id exists.' },
  TOKEN_NOT_FOUND: { status: 401, description: 'Unknown bootstrap credential.' },
  TOKEN_USED: { status: 401, description: 'The bootstrap credential was already used.' },
  SERIAL_EXISTS: { status: 500, description: 'Certificate serial collision.' },
  KEY_IN_USE: { status: 409, description: 'This public key is already certified for another device.' },
  API_KEY_EXISTS: { status: 409, description: 'An API key with this id exists.' },
  CERTIFICATE_NOT_FOUND: { status: 404, description: 'No such certificate for this device.' },
  CONFIG_VERSION_EXISTS: { status: 409, description: 'This config document version exists.' },
  TENANT_EXISTS: { status: 409, description: 'A tenant with this id exists.' },
  TENANT_NOT_FOUND: { status: 404, description: 'No tenant with this id.' },
  PROFILE_VERSION_EXISTS: { status: 409, description: 'This profile version exists (a concurrent change); retry.' },
  PROFILE_VERSION_GAP: { status: 409, description: 'Profile versions must follow each other.' },
  STORE_UNAVAILABLE: { status: 503, description: 'The state store is unavailable; retry later.' },
  IMPORT_CONFLICT: { status: 409, description: 'A record being imported exists in the target store; nothing of the batch was written.' },
  TARGET_NOT_EMPTY: { status: 409, description: 'A store copy needs an empty target store; nothing was written.' },
  COPY_MISMATCH: { status: 500, description: 'The copied store does not match its source (counts or digest differ).' },
});
export type StoreError = InstanceType<typeof StoreError>;
