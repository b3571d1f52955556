/** `npm run bench`: every benchmark, each printing its figures and its ratio to a same-run baseline. */
import { benchE2e, printE2e } from './e2e.js';
import { benchFootprint, printFootprint } from './footprint.js';
import { benchHold, printHold } from './hold.js';
import { benchIssuance, printIssuance } from './issuance.js';

console.log(`provisiond benchmarks: node ${process.versions.node}, OpenSSL ${process.versions.openssl}, ${(await import('node:os')).cpus().length} cores\n`);
printIssuance(await benchIssuance(3));
console.log();
printE2e(await benchE2e(1000, [80, 160, 240]));
console.log();
printFootprint(await benchFootprint(2000));
console.log();
printHold(await benchHold(10_000));
