/** Public surface of the EST (RFC 7030) transport. */
export { startEstServer, EST_MAX_BODY_BYTES, EST_PATH_PREFIX, EST_REALM } from './est.js';
export type { EstServer, EstServerOptions } from './est.js';
export { certsOnlyDer, certsOnlyFromPems, base64Lines } from './pkcs7.js';
