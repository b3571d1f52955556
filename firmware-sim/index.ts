export { SimDevice, makeKeyAndCsr, type SimDeviceOptions, type SimTimings } from './device.js';
export {
  runFleet,
  api,
  ApiError,
  DEFAULT_NETWORK,
  percentile,
  parseMix,
  renderHtmlReport,
  formatSummary,
  type FleetOptions,
  type FleetProgress,
  type FleetReport,
  type DeviceResult,
  type RunningFleet,
  type LoadReport,
} from './fleet.js';
export { MODELS, type ModelName } from './models.js';
export { topics, openConfigDocument, decryptSecret, verifyChain, DeviceProtocolError } from './protocol.js';
export { SimHub, type ChildDevice, type ChildTimings } from './hub.js';
