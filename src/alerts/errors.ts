import { errorFamily } from '../errors.js';

export const AlertsError = errorFamily('AlertsError', {
  EVENT_STREAM_CLOSED: { status: 503, description: 'The event stream is shutting down; reconnect later.' },
  TOO_MANY_EVENT_STREAMS: { status: 429, description: 'Too many open event streams for this tenant; close one first.' },
  WEBHOOK_URL_INVALID: { status: 400, description: 'The webhook URL must be an absolute http(s) URL without credentials.' },
});
export type AlertsError = InstanceType<typeof AlertsError>;
