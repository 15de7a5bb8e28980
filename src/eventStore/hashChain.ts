import { createHash } from 'node:crypto';
import { canonicalBytes } from '../canonicalJson.ts';
import type { StoredEvent } from './port.ts';

/** The chain starts from 32 zero bytes, so the first event's hash is defined like every other. */
export const genesisHash = '0'.repeat(64);

/** Every stored field but the hash, which is computed from them. */
export type ChainedFields = Omit<StoredEvent, 'hash'>;

/**
 * The canonical bytes of an event: RFC 8785 JSON of every stored field except the hash. Integers
 * that may exceed 2^53 travel as decimal strings so every JSON reader agrees on them.
 */
export function eventCanonicalBytes(event: ChainedFields): Buffer {
  return canonicalBytes({
    position: event.position.toString(),
    event_id: event.eventId,
    stream_name: event.streamName,
    stream_version: event.streamVersion.toString(),
    type: event.type,
    data: event.data,
    metadata: event.metadata,
    recorded_at: event.recordedAt.toISOString(),
  });
}

/** hash = sha256(prev_hash ‖ canonical bytes), both hashes as lowercase hex on the outside. */
export function chainHash(previousHash: string, event: ChainedFields): string {
  return createHash('sha256')
    .update(Buffer.from(previousHash, 'hex'))
    .update(eventCanonicalBytes(event))
    .digest('hex');
}

export type ChainVerdict =
  | { ok: true; checked: number; lastPosition: bigint; lastHash: string }
  | { ok: false; checked: number; position: bigint; reason: string };

/**
 * Walks events in position order and recomputes every link. The caller supplies the hash of the
 * event just before the first one (genesis for position 1), so verification can start anywhere.
 */
export function verifyChainSegment(
  events: Iterable<ChainedFields & { hash: string }>,
  previous: { position: bigint; hash: string },
): ChainVerdict {
  let checked = 0;
  let { position: lastPosition, hash: lastHash } = previous;
  for (const event of events) {
    if (event.position !== lastPosition + 1n) {
      return { ok: false, checked, position: lastPosition + 1n, reason: `expected position ${lastPosition + 1n}, found ${event.position}` };
    }
    const expected = chainHash(lastHash, event);
    if (expected !== event.hash) {
      return { ok: false, checked, position: event.position, reason: 'hash does not match the previous hash and the event bytes' };
    }
    checked += 1;
    lastPosition = event.position;
    lastHash = event.hash;
  }
  return { ok: true, checked, lastPosition, lastHash };
}
