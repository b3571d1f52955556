export { SimDevice, makeKeyAndCsr, type SimDeviceOptions, type SimTimings } from './device.js';
export { runFleet, api, ApiError, DEFAULT_NETWORK, percentile, type FleetOptions, type FleetReport, type DeviceResult, type RunningFleet } from './fleet.js';
export { MODELS, type ModelName } from './models.js';
export { topics, openConfigDocument, decryptSecret, verifyChain, DeviceProtocolError } from './protocol.js';
export { SimHub, type ChildDevice } from './hub.js';
