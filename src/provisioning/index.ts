export { ProvisioningService, toDeviceView, type ProvisioningDeps, type ProvisioningSettings, type DeviceSession, type DeviceReply, type Actor } from './service.js';
export { ProvisioningError } from './errors.js';
export { ClaimCodeHasher, normalizeClaimCode } from './claim-codes.js';
export { BootstrapTokens, BOOTSTRAP_AUDIENCE } from './bootstrap-tokens.js';
export { ConfigSigner, buildConfigDocument, encryptToDevice, CONFIG_JWS_TYPE, SECRET_JWE_ENC } from './config-document.js';
export { ApiKeys } from './api-keys.js';
export { loadOrCreateSecret, SecretError } from './secrets.js';
export type { Issuer, CsrInfo, IssuedCert } from './ports.js';
