import { errorFamily } from '../errors.js';

/**
 * The broker's own refusals: its abuse limits (docs/protocol.md §19-§20). Each is logged with its
 * code and counted as provisiond_mqtt_rejections_total{limit}; what the device sees is in the
 * description (MQTT 3.1.1 has no code for most of them).
 */
export const BrokerError = errorFamily('BrokerError', {
  CONNECTION_RATE_LIMITED: {
    status: 429,
    description: 'Too many new connections from this source address, or to this instance; the connection is closed before the TLS handshake.',
  },
  PACKET_TOO_LARGE: {
    status: 413,
    description: 'An MQTT packet announced more than twice mqtt.maxPayloadBytes; the connection is closed without reading it.',
  },
  TOPIC_TOO_DEEP: { status: 400, description: 'A topic has more levels than mqtt.maxTopicLevels; the connection is closed.' },
  INFLIGHT_LIMIT_EXCEEDED: {
    status: 429,
    description: 'Too many messages in flight on this connection: a message beyond mqtt.maxInflightInbound is answered with this code and not handled; a connection that leaves more than mqtt.maxInflightOutbound service messages unacknowledged is closed.',
  },
  SUBSCRIPTION_LIMIT_EXCEEDED: {
    status: 429,
    description: 'The connection holds mqtt.maxSubscriptionsPerClient topic filters already; the new one gets SUBACK 0x80.',
  },
});
export type BrokerError = InstanceType<typeof BrokerError>;
