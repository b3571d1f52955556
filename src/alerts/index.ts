export { EventBus, type ServiceEvent, type NewServiceEvent, type EventListener, type Subscription, type Replay, type EventBusOptions } from './bus.js';
export { EventStreams, formatEvent, REPLAY_GAP_EVENT, type EventStreamOptions } from './sse.js';
export {
  WebhookNotifier,
  validateWebhookUrl,
  signWebhookBody,
  MAX_RETRY_DELAY_MS,
  type WebhookTarget,
  type WebhookNotifierOptions,
  type DeliveryStats,
} from './webhooks.js';
export { forwardToWebhooks, type WebhookForwardingOptions } from './forward.js';
export { AlertsError } from './errors.js';
export { RedisEventRelay } from './redis-relay.js';
