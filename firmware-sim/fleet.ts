/**
 * The fleet runner (firmware-sim/fleet/): provisions a fleet of simulated devices through the
 * documented HTTP API and MQTT protocol and measures it. `runFleet` is the entry point; the
 * command line is firmware-sim/cli.ts (`npm run fleet`).
 */
export { DEFAULT_NETWORK, ApiError, api, errorCode, percentile } from './fleet/http.js';
export { runFleet, type FleetOptions, type FleetProgress, type FleetReport, type DeviceResult, type DeviceOutcome, type RunningFleet } from './fleet/runner.js';
export { parseMix, formatMix, assignModels, planFleet, parseSourceAddresses, loopbackAddresses, type Mix, type FleetPlan } from './fleet/plan.js';
export { buildLoadReport, formatSummary, reportToJson, REPORT_KIND, type LoadReport, type StageReport } from './fleet/report.js';
export { renderHtmlReport } from './fleet/html.js';
export { STAGES, MAIN_STAGES, STAGE_LABELS, type Stage, type SecondBucket, type StageSummary } from './fleet/stats.js';
