import { createHash } from 'node:crypto';
import { canonicalJson } from '../canonicalJson.ts';
import type { Decider } from '../deciders/decider.ts';
import { DomainError, invariant } from '../errors.ts';
import { EventIdReused, VersionConflict, type EventStore, type JsonObject, type StoredEvent } from '../eventStore/port.ts';
import { AggregateCache } from './aggregateCache.ts';
import type { StreamLocks } from './streamLocks.ts';

/** What the one command handler needs to know about a kind of command. */
export interface CommandSpec<Command, Event extends { type: string; data: JsonObject }, State> {
  decider: Decider<Command, Event, State>;
  streamName(command: Command): string;
  /** Names the operation, so a retry of it derives the same event ids and appends nothing new. */
  operationKey(command: Command): string;
  /** The fields that make two requests the same operation; a retry with other fields is refused. */
  intent(command: Command): JsonObject;
  /** The error for an operation key that was already used with another intent. */
  reusedKeyError(command: Command): DomainError;
  parseEvent(type: string, data: JsonObject): Event | null;
}

export interface CommandOutcome<State> {
  events: StoredEvent[];
  state: State;
  /** The operation had already been carried out; nothing was appended. */
  replayed: boolean;
  lastPosition: bigint;
}

export interface CommandContext<State> {
  store: EventStore;
  cache: AggregateCache<State>;
  /** When present, commands on one stream queue in this process instead of racing each other. */
  locks?: StreamLocks;
}

const maxAttempts = 8;
const maxEventsPerCommand = 16;

export function operationEventId(streamName: string, operationKey: string, index: number): string {
  return createHash('sha256').update(`${streamName}\n${operationKey}\n${index}`).digest('hex');
}

/**
 * load → decide → enrich → append, retried on a version conflict. Event ids derive from the
 * operation, so an operation already in the log is answered from the log, which makes every
 * command safe to retry.
 */
export function handleCommand<Command, Event extends { type: string; data: JsonObject }, State>(
  context: CommandContext<State>,
  spec: CommandSpec<Command, Event, State>,
  command: Command,
): Promise<CommandOutcome<State>> {
  const streamName = spec.streamName(command);
  if (context.locks === undefined) return decideAndAppend(context, spec, command, streamName);
  return context.locks.run(streamName, () => decideAndAppend(context, spec, command, streamName));
}

async function decideAndAppend<Command, Event extends { type: string; data: JsonObject }, State>(
  context: CommandContext<State>,
  spec: CommandSpec<Command, Event, State>,
  command: Command,
  streamName: string,
): Promise<CommandOutcome<State>> {
  const operationKey = spec.operationKey(command);
  const intentHash = createHash('sha256').update(canonicalJson(spec.intent(command))).digest('hex');
  // An operation already in the log is recognised by its event ids. Looking them up costs a query,
  // so it is done only when the decision or the append says something may already have happened:
  // a refusal, a replayed append, or an id stored with other content.
  const earlier = () => findOperation(context, spec, command, streamName, operationKey, intentHash);
  for (let attempt = 1; attempt <= maxAttempts; attempt += 1) {
    // 1. Load the state as of the stream's last version.
    const { version, state } = await loadState(context, spec, streamName);
    // 2. Decide. A refusal may be a retry whose original already changed the state: that is a replay.
    let decided: Event[];
    try {
      decided = spec.decider.decide(command, state);
    } catch (error) {
      if (!(error instanceof DomainError)) throw error;
      const replay = await earlier();
      if (replay !== null) return replay;
      throw error;
    }
    invariant(decided.length <= maxEventsPerCommand, 'a command yields at most 16 events');
    // Deciding nothing is an outcome (the command was already satisfied), not an error.
    if (decided.length === 0) return { events: [], state, replayed: true, lastPosition: 0n };
    // 3. Enrich with deterministic ids and the operation's metadata, then append.
    const events = decided.map((event, index) => ({
      eventId: operationEventId(streamName, operationKey, index),
      type: event.type,
      data: event.data,
      metadata: { operation: operationKey, intent_hash: intentHash },
    }));
    try {
      const result = await context.store.append(streamName, events, { expectedVersion: version });
      if (result.replayed) {
        const replay = await earlier();
        if (replay !== null) return replay;
        continue;
      }
      const nextState = decided.reduce(spec.decider.evolve, state);
      context.cache.set(streamName, result.nextStreamVersion, nextState);
      return { events: result.events, state: nextState, replayed: false, lastPosition: result.lastPosition };
    } catch (error) {
      if (error instanceof VersionConflict) continue;
      if (!(error instanceof EventIdReused)) throw error;
      // Ids already stored with other content: the same operation with details that vary (a
      // timestamp), or another operation under the key. The stored intent tells which.
      const replay = await earlier();
      if (replay !== null) return replay;
      throw spec.reusedKeyError(command);
    }
  }
  throw new DomainError('version_conflict', `Too much contention on ${streamName}; retry the request`);
}

async function findOperation<Command, Event extends { type: string; data: JsonObject }, State>(
  context: CommandContext<State>,
  spec: CommandSpec<Command, Event, State>,
  command: Command,
  streamName: string,
  operationKey: string,
  intentHash: string,
): Promise<CommandOutcome<State> | null> {
  const ids = Array.from({ length: maxEventsPerCommand }, (_, index) => operationEventId(streamName, operationKey, index));
  const stored = await context.store.readEventsById(ids);
  const first = stored[0];
  if (first === undefined) return null;
  if (first.streamName !== streamName || first.metadata['intent_hash'] !== intentHash) throw spec.reusedKeyError(command);
  const { state } = await loadState(context, spec, streamName);
  return { events: stored, state, replayed: true, lastPosition: stored[stored.length - 1]!.position };
}

/** The current state of one aggregate, through the same cache commands use. */
export async function loadAggregateState<Command, Event extends { type: string; data: JsonObject }, State>(
  context: CommandContext<State>,
  spec: CommandSpec<Command, Event, State>,
  streamName: string,
): Promise<State> {
  return (await loadState(context, spec, streamName)).state;
}

async function loadState<Command, Event extends { type: string; data: JsonObject }, State>(
  context: CommandContext<State>,
  spec: CommandSpec<Command, Event, State>,
  streamName: string,
): Promise<{ version: bigint; state: State }> {
  const cached = context.cache.get(streamName);
  let version = cached?.version ?? 0n;
  let state = cached?.state ?? spec.decider.initialState();
  for (const stored of await context.store.readStream(streamName, { fromVersion: version })) {
    const event = spec.parseEvent(stored.type, stored.data);
    invariant(event !== null, `stream ${streamName} holds an event of unknown type ${stored.type}`);
    state = spec.decider.evolve(state, event);
    version = stored.streamVersion;
  }
  context.cache.set(streamName, version, state);
  return { version, state };
}
