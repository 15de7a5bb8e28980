import { customerAccountEventSchemas, parseCustomerAccountEvent, type CustomerAccountEvent } from '../src/events/customerAccount.ts';
import type { StoredEvent } from '../src/eventStore/port.ts';

const parsed = new WeakMap<StoredEvent, CustomerAccountEvent | null>();

/**
 * The typed account event of a stored event, or null for other aggregates' events. Several
 * projections read the same batch, so each stored event is validated once rather than once per
 * projection; entries disappear with the batch.
 */
export function accountEventOf(stored: StoredEvent): CustomerAccountEvent | null {
  let event = parsed.get(stored);
  if (event === undefined) {
    event = parseCustomerAccountEvent(stored.type, stored.data);
    parsed.set(stored, event);
  }
  return event;
}

/** Every customer account event type: what the account projections read. */
export const customerAccountEventTypes: readonly string[] = Object.keys(customerAccountEventSchemas);
