import type { Kysely } from 'kysely';
import type { ProjectionTables } from '../../projections/tables.ts';
import { operationEventId } from '../commands/handleCommand.ts';
import { invariant } from '../errors.ts';
import { jobEventSchemas } from '../events/job.ts';
import { transparencyStreamName } from '../events/transparency.ts';
import { EventIdReused, VersionConflict, type EventStore, type NewEvent, type StoredEvent, type Subscription } from '../eventStore/port.ts';
import { findCheckpoint, readProjectedLog } from '../queries/transparency.ts';
import type { NodeIdentity } from '../receipts/ed25519.ts';
import { receiptHash } from '../receipts/receipt.ts';
import { checkpointSignerFromIdentity, formatVerifierKey, isValidKeyName, signCheckpoint, verifyCheckpoint, type CheckpointSigner } from './checkpoint.ts';
import { hex, TransparencyLogState } from './logState.ts';
import { leafHash, type MerkleTree } from './merkle.ts';
import type { TransparencySettings } from './settings.ts';

export { defaultOrigin, defaultTransparencySettings, type TransparencySettings } from './settings.ts';

/** What the proof endpoints read: the published key and the tree, which only ever grows. */
export interface TransparencyProofs {
  readonly origin: string;
  readonly ledgerKeyId: string;
  readonly ledgerPublicKey: string;
  /** The C2SP verifier key, `<origin>+<key hash>+<base64(0x01 || key)>`. */
  readonly verifierKey: string;
  readonly tree: Pick<MerkleTree, 'size' | 'root' | 'leafHashAt' | 'inclusionProof' | 'consistencyProof'>;
  waitForTreeSize(size: number, timeoutMs: number): Promise<boolean>;
}

interface PendingLeaf {
  acceptedPosition: bigint;
  receiptHash: string;
  jobId: string;
  leafHash: string;
}

interface Waiter {
  condition: () => boolean;
  resolve: (reached: boolean) => void;
}

/** Bounds on one append, one read and one turn, so a long backlog is logged in steps of known size. */
const maxLeavesPerAppend = 1_000;
const followBatchSize = 2_000;
const maxAppendsPerTurn = 8;
const initialBackoffMs = 100;
const maxBackoffMs = 5_000;

/**
 * The sequencer and checkpoint publisher of the transparency log. It follows the global log and
 * gives every ReceiptAccepted a ReceiptLogged leaf, in global order, and publishes a signed
 * checkpoint when enough leaves wait or the oldest has waited long enough.
 *
 * Its state changes only as the log's own events are read back, whoever wrote them: after every
 * append, written or refused, it reads the stream from the version it knows, so the next append
 * expects the version the log really has. Event ids derive from the accepted position and the tree
 * size, so a second server or a restart that repeats an append writes nothing; a version conflict or
 * a partly stored append means another writer got there first, and reading back brings its events.
 */
export class TransparencyLog implements TransparencyProofs {
  readonly origin: string;
  readonly ledgerKeyId: string;
  readonly ledgerPublicKey: string;
  readonly verifierKey: string;
  private readonly signer: CheckpointSigner;
  private state = new TransparencyLogState();
  private pending: PendingLeaf[] = [];
  /** Global position of the last event read. */
  private followed = 0n;
  private unpublishedSince: number | null = null;
  private timer: NodeJS.Timeout | null = null;
  private subscription: Subscription | null = null;
  private starting: Promise<void> | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly waiters = new Set<Waiter>();
  private readonly now: () => number;
  /** The back-off's wait; tests count and shorten it. */
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(
    private readonly store: EventStore,
    private readonly db: Kysely<ProjectionTables>,
    identity: NodeIdentity,
    private readonly settings: TransparencySettings,
    private readonly options: { onError?: (error: Error) => void; now?: () => number; sleep?: (ms: number) => Promise<void> } = {},
  ) {
    if (!isValidKeyName(settings.origin)) throw new TypeError('The transparency origin must be non-empty, without spaces, "+" or control characters');
    if (!Number.isSafeInteger(settings.checkpointEveryLeaves) || settings.checkpointEveryLeaves < 1) throw new TypeError('checkpointEveryLeaves must be a positive integer');
    if (!Number.isFinite(settings.checkpointEveryMs) || settings.checkpointEveryMs < 1) throw new TypeError('checkpointEveryMs must be positive');
    this.origin = settings.origin;
    this.ledgerKeyId = identity.keyId;
    this.ledgerPublicKey = identity.publicKeyBase64url;
    this.verifierKey = formatVerifierKey(settings.origin, identity.publicKeyRaw);
    this.signer = checkpointSignerFromIdentity(settings.origin, identity);
    this.now = options.now ?? Date.now;
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  }

  get tree(): MerkleTree {
    return this.state.tree;
  }

  /**
   * Loads the tree from the projection, then follows the log from the last receipt it holds. A log
   * keeps its origin and key for life: witnesses and auditors follow it by them, so a service
   * configured with another origin or ledger key refuses to start instead of forking the log.
   */
  start(): Promise<void> {
    this.starting ??= this.load();
    return this.starting;
  }

  private async load(): Promise<void> {
    const latest = await findCheckpoint(this.db, null);
    if (latest !== null) {
      const verified = verifyCheckpoint(latest.note, this.verifierKey);
      if (!verified.ok || verified.checkpoint.origin !== this.origin) {
        throw new Error(`The transparency log's checkpoint of size ${latest.tree_size} is not signed for origin ${this.origin} with this ledger key`);
      }
    }
    this.stopped = false;
    this.state = await loadState(this.db);
    this.pending = [];
    this.followed = this.state.lastAcceptedPosition;
    this.schedule();
    this.notifyWaiters();
    this.running = this.follow();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.clearTimer();
    await this.subscription?.close();
    await this.running;
    this.running = null;
    await this.queue;
    this.starting = null;
    for (const waiter of [...this.waiters]) waiter.resolve(false);
  }

  waitForTreeSize(size: number, timeoutMs: number): Promise<boolean> {
    return this.waitUntil(() => this.state.tree.size >= size, timeoutMs);
  }

  /** Resolves once every receipt accepted up to the current head is a leaf this process has read back. */
  async sync(timeoutMs = 10_000): Promise<void> {
    if (this.running === null) throw new Error('The transparency log is not running');
    const head = await this.store.headPosition();
    // Receipts accepted later may still wait; every one up to the head must be read back as a leaf.
    const logged = () => this.followed >= head && (this.pending[0]?.acceptedPosition ?? head + 1n) > head;
    if (!(await this.waitUntil(logged, timeoutMs))) throw new Error(`Timed out after ${timeoutMs} ms logging the receipts accepted up to position ${head}`);
  }

  /**
   * Logs everything accepted so far and publishes a checkpoint over it now, whatever the schedule
   * says; resolves with the tree size of the latest checkpoint, or null while the log is empty.
   */
  async publishNow(timeoutMs = 10_000): Promise<number | null> {
    const deadline = this.now() + timeoutMs;
    await this.sync(timeoutMs);
    const target = this.state.tree.size;
    while (this.state.checkpointSize < target) {
      if (this.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms publishing a checkpoint of size ${target}`);
      await this.exclusive(async () => {
        await this.publishIfDue(true);
        this.schedule();
        this.notifyWaiters();
      });
    }
    return target === 0 ? null : this.state.checkpointSize;
  }

  /**
   * Reads the log and appends what it calls for. A failure (a lost connection, a failed append) is
   * reported and retried after a wait that doubles up to maxBackoffMs. The retry first appends what
   * is still pending: the failed batch has been read already, so no event may come to set it off.
   */
  private async follow(): Promise<void> {
    let backoffMs = initialBackoffMs;
    let retrying = false;
    while (!this.stopped) {
      try {
        if (retrying) {
          // Only appends that went through end the back-off: a log that cannot be read keeps doubling it.
          if (await this.exclusive(() => this.advance())) backoffMs = initialBackoffMs;
          retrying = false;
          // stop() may have come during that append, with no subscription to close yet.
          if (this.stopped) return;
        }
        this.subscription = this.store.subscribe(this.followed, { batchSize: followBatchSize });
        for await (const batch of this.subscription.batches()) {
          await this.exclusive(() => this.handle(batch));
          backoffMs = initialBackoffMs;
        }
      } catch (error) {
        if (this.stopped) return;
        this.options.onError?.(error as Error);
        await this.subscription?.close();
        this.subscription = null;
        await this.sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, maxBackoffMs);
        retrying = true;
      }
    }
  }

  private async handle(batch: readonly StoredEvent[]): Promise<void> {
    for (const stored of batch) {
      // The log's own events were mostly read back already; apply() checks those instead.
      if (stored.streamName === transparencyStreamName) this.state.apply(stored);
      else if (stored.type === 'ReceiptAccepted') this.observeAcceptance(stored);
      this.followed = stored.position;
    }
    this.dropLogged();
    await this.advance();
  }

  private observeAcceptance(stored: StoredEvent): void {
    const lastQueued = this.pending[this.pending.length - 1]?.acceptedPosition ?? 0n;
    if (stored.position <= this.state.lastAcceptedPosition || stored.position <= lastQueued) return;
    const data = jobEventSchemas.ReceiptAccepted.parse(stored.data);
    const bytes = Buffer.from(data.receipt_canonical, 'utf8');
    invariant(receiptHash(bytes) === data.receipt_hash, `the receipt accepted at ${stored.position} does not hash to its receipt_hash`);
    this.pending.push({ acceptedPosition: stored.position, receiptHash: data.receipt_hash, jobId: data.job_id, leafHash: hex(leafHash(bytes)) });
  }

  /** Pending receipts that are leaves by now, whoever logged them. */
  private dropLogged(): void {
    const logged = this.state.lastAcceptedPosition;
    let count = 0;
    while (count < this.pending.length && this.pending[count]!.acceptedPosition <= logged) count += 1;
    if (count > 0) this.pending.splice(0, count);
  }

  /**
   * Appends until nothing is due, a due checkpoint first, so a steady stream of receipts cannot
   * starve it. True when the log moved.
   */
  private async advance(): Promise<boolean> {
    let moved = false;
    for (let turn = 0; turn < maxAppendsPerTurn; turn++) {
      if (!(await this.publishIfDue(false)) && !(await this.appendLeaves())) break;
      moved = true;
    }
    this.schedule();
    this.notifyWaiters();
    return moved;
  }

  private async appendLeaves(): Promise<boolean> {
    if (this.pending.length === 0) return false;
    const size = this.state.tree.size;
    const events = this.pending.slice(0, maxLeavesPerAppend).map(
      (leaf, offset): NewEvent => ({
        eventId: operationEventId(transparencyStreamName, `leaf:${leaf.acceptedPosition}`, 0),
        type: 'ReceiptLogged',
        data: {
          leaf_index: size + offset,
          receipt_hash: leaf.receiptHash,
          job_id: leaf.jobId,
          accepted_position: String(leaf.acceptedPosition),
          leaf_hash: leaf.leafHash,
        },
      }),
    );
    return this.appendToLog(events);
  }

  private async publishIfDue(force: boolean): Promise<boolean> {
    const size = this.state.tree.size;
    const unpublished = size - this.state.checkpointSize;
    if (unpublished <= 0) return false;
    const waitedMs = this.unpublishedSince === null ? 0 : this.now() - this.unpublishedSince;
    if (!force && unpublished < this.settings.checkpointEveryLeaves && waitedMs < this.settings.checkpointEveryMs) return false;
    const rootHash = this.state.tree.root(size);
    const note = signCheckpoint({ origin: this.origin, treeSize: size, rootHash }, this.signer);
    return this.appendToLog([
      {
        eventId: operationEventId(transparencyStreamName, `checkpoint:${size}`, 0),
        type: 'CheckpointPublished',
        data: { tree_size: size, root_hash: hex(rootHash), key_name: this.signer.keyName, key_id: this.ledgerKeyId, note },
      },
    ]);
  }

  /**
   * Appends at the version this state has, then reads the stream back from it: our events, or the
   * other writer's that made the append a conflict, a replay or a partly stored batch. True when the
   * state moved, so the caller may append again.
   */
  private async appendToLog(events: NewEvent[]): Promise<boolean> {
    const version = this.state.version;
    try {
      await this.store.append(transparencyStreamName, events, { expectedVersion: version });
    } catch (error) {
      if (!(error instanceof VersionConflict) && !(error instanceof EventIdReused)) throw error;
    }
    for (const stored of await this.store.readStream(transparencyStreamName, { fromVersion: version })) this.state.apply(stored);
    this.dropLogged();
    return this.state.version > version;
  }

  /** Arms the timer that publishes the checkpoint once the oldest unpublished leaf has waited long enough. */
  private schedule(retryMs = 0): void {
    if (this.state.tree.size <= this.state.checkpointSize) {
      this.unpublishedSince = null;
      this.clearTimer();
      return;
    }
    this.unpublishedSince ??= this.now();
    if (this.timer !== null || this.stopped) return;
    const delayMs = Math.max(retryMs, this.unpublishedSince + this.settings.checkpointEveryMs - this.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      this.exclusive(() => this.advance()).catch((error: Error) => {
        this.options.onError?.(error);
        this.schedule(1_000);
      });
    }, delayMs);
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Runs appends one after another: the follower's batches, the timer and publishNow share one stream version. */
  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const result = this.queue.then(work);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private waitUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
    if (condition()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        condition,
        resolve: (reached) => {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          resolve(reached);
        },
      };
      const timer = setTimeout(() => waiter.resolve(false), timeoutMs);
      this.waiters.add(waiter);
    });
  }

  private notifyWaiters(): void {
    for (const waiter of [...this.waiters]) if (waiter.condition()) waiter.resolve(true);
  }
}

/**
 * The state as the projection holds it, read in one snapshot: every leaf and checkpoint at or
 * before the projection's position. Each stream event is one row, so their count is the version.
 */
async function loadState(db: Kysely<ProjectionTables>): Promise<TransparencyLogState> {
  const state = new TransparencyLogState();
  let leaves = 0;
  const { checkpoints } = await readProjectedLog(db, (page) => {
    const hashes = Buffer.from(page.hashesHex, 'hex');
    invariant(hashes.length === page.count * 32, `the projected leaves from ${page.firstIndex} do not hold ${page.count} hashes`);
    state.addLeaves(page.firstIndex, hashes, page.lastAcceptedPosition);
    leaves += page.count;
  });
  for (const checkpoint of checkpoints) state.addCheckpoint(checkpoint.tree_size, checkpoint.root_hash);
  state.version = BigInt(leaves + checkpoints.length);
  return state;
}
