/**
 * Connects the bus to the notifier: every event of a tenant with a webhook becomes a delivery.
 * The tenant's webhook is looked up per event (it may change at any time); lookups for one tenant
 * are chained so that an async lookup can never reorder that tenant's deliveries.
 */
import type { Logger } from 'pino';
import type { EventBus, ServiceEvent } from './bus.js';
import type { WebhookNotifier, WebhookTarget } from './webhooks.js';

export interface WebhookForwardingOptions {
  /** The tenant's webhook, or undefined when it has none (e.g. from the store's Tenant.webhook). */
  targetOf: (tenantId: string) => WebhookTarget | undefined | Promise<WebhookTarget | undefined>;
  /** Event types to forward (default: all). */
  types?: readonly string[];
  log: Logger;
}

/** Returns the function that stops forwarding. */
export function forwardToWebhooks(bus: EventBus, notifier: Pick<WebhookNotifier, 'notify'>, opts: WebhookForwardingOptions): () => void {
  const types = opts.types ? new Set(opts.types) : undefined;
  const tails = new Map<string, Promise<void>>();
  const forward = async (event: ServiceEvent): Promise<void> => {
    try {
      const target = await opts.targetOf(event.tenantId);
      if (target) notifier.notify(target, event);
    } catch (err) {
      opts.log.warn({ err, tenantId: event.tenantId, eventId: event.id }, 'webhook not queued');
    }
  };
  return bus.subscribeAll((event) => {
    if (types && !types.has(event.type)) return;
    const tail = (tails.get(event.tenantId) ?? Promise.resolve()).then(() => forward(event));
    tails.set(event.tenantId, tail);
    void tail.then(() => {
      if (tails.get(event.tenantId) === tail) tails.delete(event.tenantId);
    });
  });
}
