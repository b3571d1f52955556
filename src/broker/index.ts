export { ProvisioningBroker, type BrokerOptions } from './broker.js';
export { connackFor, CONNACK } from './replies.js';
export { BrokerError } from './errors.js';
