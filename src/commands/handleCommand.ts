import { createHash, randomUUID } from 'node:crypto';
import { canonicalJson } from '../canonicalJson.ts';
import type { Decider } from '../deciders/decider.ts';
import { DomainError, invariant } from '../errors.ts';
import { EventIdReused, VersionConflict, type AppendResult, type EventStore, type JsonObject, type NewEvent, type StoredEvent } from '../eventStore/port.ts';
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
  /**
   * Nothing was appended: the operation had already been carried out (`events` are the ones it
   * stored), or the decision was that there was nothing to do (`events` is empty).
   */
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
export async function handleCommand<Command, Event extends { type: string; data: JsonObject }, State>(
  context: CommandContext<State>,
  spec: CommandSpec<Command, Event, State>,
  command: Command,
): Promise<CommandOutcome<State>> {
  const [outcome] = await handleCommandsTogether(bindCommand(context, spec, command));
  return outcome;
}

/**
 * Commands on distinct streams decided together and appended in one atomic append: every one
 * of them takes effect or none does (a reservation and the job it pays for, a capture and the
 * job's settlement). Each stream's lock is taken in name order, so two groups never wait on each
 * other. A refusal of any command refuses the group.
 *
 * A stream's lock is held while its command is decided and its append queued, not until the append
 * commits: the next command on the stream decides on the state the queued append will write and
 * expects the version after it, so the commands of one busy account share group commits. If an
 * append fails, the ones queued on top of it fail their version check and are decided again.
 *
 * A command that decides nothing adds no part to the append, so its stream's version is not
 * checked with the others': group only commands whose decision does not depend on another part's
 * stream staying put (the gateway's reserve + start and settle + finish each decide every time).
 */
export async function handleCommandsTogether<const Parts extends readonly BoundCommand<unknown>[]>(
  ...parts: Parts
): Promise<{ [Index in keyof Parts]: Parts[Index] extends BoundCommand<infer State> ? CommandOutcome<State> : never }> {
  invariant(parts.length > 0, 'at least one command');
  invariant(new Set(parts.map((part) => part.streamName)).size === parts.length, 'one command per stream');
  invariant(
    parts.every((part) => part.store === parts[0]!.store),
    'commands decided together share one event store',
  );
  return (await decideAndAppend(parts)) as { [Index in keyof Parts]: Parts[Index] extends BoundCommand<infer State> ? CommandOutcome<State> : never };
}

/** Runs `work` holding every part's stream lock, taken in name order. */
function underLocks<Result>(parts: readonly BoundCommand<unknown>[], work: () => Promise<Result>): Promise<Result> {
  const ordered = [...parts].sort((a, b) => (a.streamName < b.streamName ? -1 : 1));
  const locked = ordered.reduceRight<() => Promise<Result>>(
    (inner, part) => (part.locks === undefined ? inner : () => part.locks!.run(part.streamName, inner)),
    work,
  );
  return locked();
}

type Step =
  | { kind: 'done'; outcomes: CommandOutcome<unknown>[] }
  | { kind: 'retry' }
  | { kind: 'queued'; decisions: Decision<unknown>[]; appending: Decision<unknown>[]; appended: Promise<AppendResult[]> };

async function decideAndAppend(parts: readonly BoundCommand<unknown>[]): Promise<CommandOutcome<unknown>[]> {
  for (let attempt = 1; attempt <= maxAttempts; attempt += 1) {
    const step = await underLocks(parts, () => decideAndQueue(parts, attempt === 1));
    if (step.kind === 'done') return step.outcomes;
    if (step.kind === 'retry') continue;
    // 4. Wait for the commit outside the locks.
    const { decisions, appending, appended } = step;
    let results: AppendResult[];
    try {
      results = await appended;
    } catch (error) {
      if (error instanceof VersionConflict) continue;
      if (!(error instanceof EventIdReused)) throw error;
      // Ids already stored with other content: the same operation with details that vary (a
      // timestamp), or another operation under the key. The stored intent tells which.
      const replay = await earlierOutcomes(parts);
      if (replay !== null) return replay;
      throw appending[0]!.part.reusedKeyError();
    }
    if (results.every((result) => result.replayed)) {
      const replay = await earlierOutcomes(parts);
      if (replay !== null) return replay;
      continue;
    }
    return decisions.map((decision) => {
      const result = results[appending.indexOf(decision)];
      return result === undefined ? { events: [], state: decision.state, replayed: true, lastPosition: 0n } : decision.part.applied(decision, result);
    });
  }
  throw new DomainError('version_conflict', `Too much contention on ${parts.map((part) => part.streamName).join(', ')}; retry the request`);
}

/**
 * Steps 1–3 under the locks. On the first attempt the decision trusts what this process knows:
 * the state an append still in flight will write, or the cached state. An append decided on a
 * stale state loses at the version check and is decided again on what the log holds; a refusal or
 * a no-op decided on it is checked against the log before it is believed.
 */
async function decideAndQueue(parts: readonly BoundCommand<unknown>[], trustCache: boolean): Promise<Step> {
  // 1–2. Load and decide.
  const decisions: Decision<unknown>[] = [];
  try {
    for (const part of parts) decisions.push(await part.decide(trustCache));
  } catch (error) {
    if (error instanceof StaleCache) return { kind: 'retry' };
    if (!(error instanceof RefusedByDecider)) throw error;
    // A refusal may be a retry whose original already changed the state: that is a replay.
    const replay = await earlierOutcomes(parts);
    if (replay !== null) return { kind: 'done', outcomes: replay };
    throw error.refusal;
  }
  if (decisions.some((decision) => decision.fromCache && decision.events.length === 0)) return { kind: 'retry' };
  const appending = decisions.filter((decision) => decision.events.length > 0);
  // Deciding nothing is an outcome (the command was already satisfied), not an error.
  if (appending.length === 0) {
    return { kind: 'done', outcomes: decisions.map((decision) => ({ events: [], state: decision.state, replayed: true, lastPosition: 0n })) };
  }
  // 3. Queue the decided events, enriched with deterministic ids, as one atomic append. Queuing
  //    is synchronous, so a command decided after this one is also appended after it.
  const store = parts[0]!.store;
  const streams = appending.map((decision) => ({
    streamName: decision.part.streamName,
    events: decision.events,
    expectedVersion: decision.version,
    ...(decision.lastEvent === undefined ? {} : { expectedLastEvent: decision.lastEvent }),
  }));
  const [first] = streams;
  const appended = streams.length === 1 ? store.append(first!.streamName, first!.events, first!).then((result) => [result]) : store.appendMulti(streams);
  for (const decision of appending) decision.part.inFlight(decision, appended);
  return { kind: 'queued', decisions, appending, appended };
}

/**
 * The outcomes of a group already carried out, or null when it was not: every command of the
 * group must be in the log. One found alone is another operation under the same key (recovery
 * releasing the reservation a request was about to release with its job's end), not this group.
 */
async function earlierOutcomes(parts: readonly BoundCommand<unknown>[]): Promise<CommandOutcome<unknown>[] | null> {
  const found: CommandOutcome<unknown>[] = [];
  for (const part of parts) {
    const outcome = await part.earlier();
    if (outcome === null) return null;
    found.push(outcome);
  }
  return found;
}

interface Decision<State> {
  part: BoundCommand<State>;
  version: bigint;
  state: State;
  /** The state came from what this process knows (cache, append in flight) without asking the log. */
  fromCache: boolean;
  /**
   * Set when the state is the one an append still in flight will write: its last event, which the
   * stream's last event must be (id, type, data and metadata with its append id), so the append
   * passes only if that append wrote it — not a replay of it, not another writer.
   */
  lastEvent?: NewEvent;
  events: NewEvent[];
  /** Folds the decided events into the state. */
  evolve(state: State): State;
}

/** The cached state refused or had nothing to do: ask the log before believing it. */
class StaleCache extends Error {}

class RefusedByDecider extends Error {
  constructor(readonly refusal: DomainError) {
    super(refusal.message);
  }
}

/** The state a queued append will leave its stream in, until it settles. */
interface InFlight {
  version: bigint;
  lastEvent: NewEvent;
  state: unknown;
  settled: Promise<unknown>;
}

/** Appends in flight per stream, for the commands that queue behind the same locks. */
const inFlightByLocks = new WeakMap<StreamLocks, Map<string, InFlight>>();

function inFlightOf(locks: StreamLocks | undefined): Map<string, InFlight> | null {
  if (locks === undefined) return null;
  let inFlight = inFlightByLocks.get(locks);
  if (inFlight === undefined) {
    inFlight = new Map();
    inFlightByLocks.set(locks, inFlight);
  }
  return inFlight;
}

/** A command bound to its context and spec, so commands of different aggregates can be decided together. */
export interface BoundCommand<State> {
  readonly streamName: string;
  readonly store: EventStore;
  readonly locks: StreamLocks | undefined;
  decide(trustCache: boolean): Promise<Decision<State>>;
  /** Records the state `appended` will write, for the next command on the stream to decide on. */
  inFlight(decision: Decision<State>, appended: Promise<unknown>): void;
  applied(decision: Decision<State>, result: AppendResult): CommandOutcome<State>;
  earlier(): Promise<CommandOutcome<State> | null>;
  reusedKeyError(): DomainError;
}

export function bindCommand<Command, Event extends { type: string; data: JsonObject }, State>(
  context: CommandContext<State>,
  spec: CommandSpec<Command, Event, State>,
  command: Command,
): BoundCommand<State> {
  const streamName = spec.streamName(command);
  const operationKey = spec.operationKey(command);
  const intentHash = createHash('sha256').update(canonicalJson(spec.intent(command))).digest('hex');
  const inFlight = inFlightOf(context.locks);
  const bound: BoundCommand<State> = {
    streamName,
    store: context.store,
    locks: context.locks,
    async decide(trustCache) {
      const pending = inFlight?.get(streamName);
      let known: { version: bigint; state: State; lastEvent?: NewEvent } | undefined;
      if (trustCache) {
        known =
          pending === undefined
            ? context.cache.get(streamName)
            : { version: pending.version, state: pending.state as State, lastEvent: pending.lastEvent };
      } else if (pending !== undefined) {
        // What the log holds is only known once the appends queued before this one have settled.
        await pending.settled.catch(() => undefined);
      }
      const { version, state, lastEvent }: { version: bigint; state: State; lastEvent?: NewEvent } = known ?? (await loadState(context, spec, streamName));
      let decided: Event[];
      try {
        decided = spec.decider.decide(command, state);
      } catch (error) {
        if (!(error instanceof DomainError)) throw error;
        throw known === undefined ? new RefusedByDecider(error) : new StaleCache();
      }
      invariant(decided.length <= maxEventsPerCommand, 'a command yields at most 16 events');
      // The append id makes these events this append's alone: a command queued on top of it
      // expects its last event, metadata included, so only this append writing it lets that pass.
      const appendId = randomUUID();
      const events = decided.map((event, index) => ({
        eventId: operationEventId(streamName, operationKey, index),
        type: event.type,
        data: event.data,
        metadata: { operation: operationKey, intent_hash: intentHash, append_id: appendId },
      }));
      return {
        part: bound,
        version,
        state,
        fromCache: known !== undefined,
        ...(lastEvent === undefined ? {} : { lastEvent }),
        events,
        evolve: (from) => decided.reduce(spec.decider.evolve, from),
      };
    },
    inFlight(decision, appended) {
      if (inFlight === null) return;
      const entry: InFlight = {
        version: decision.version + BigInt(decision.events.length),
        lastEvent: decision.events[decision.events.length - 1]!,
        state: decision.evolve(decision.state),
        settled: appended,
      };
      inFlight.set(streamName, entry);
      const forget = () => {
        if (inFlight.get(streamName) === entry) inFlight.delete(streamName);
      };
      appended.then(forget, forget);
    },
    applied(decision, result) {
      const nextState = decision.evolve(decision.state);
      context.cache.set(streamName, result.nextStreamVersion, nextState);
      return { events: result.events, state: nextState, replayed: false, lastPosition: result.lastPosition };
    },
    earlier: () => findOperation(context, spec, command, streamName, operationKey, intentHash),
    reusedKeyError: () => spec.reusedKeyError(command),
  };
  return bound;
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

/**
 * The current state of one aggregate, through the same cache commands use. With `maxAgeMs`, a
 * cached state that matched the log at most that long ago is taken without asking the log.
 */
export async function loadAggregateState<Command, Event extends { type: string; data: JsonObject }, State>(
  context: CommandContext<State>,
  spec: CommandSpec<Command, Event, State>,
  streamName: string,
  options: { maxAgeMs?: number } = {},
): Promise<State> {
  const cached = options.maxAgeMs === undefined ? undefined : context.cache.get(streamName);
  if (cached !== undefined && performance.now() - cached.confirmedAt <= options.maxAgeMs!) return cached.state;
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
