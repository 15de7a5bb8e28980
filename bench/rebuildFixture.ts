/**
 * The log the rebuild benchmark replays: customer accounts driven through the real decider
 * (create, deposit, reserve, capture, release), interleaved across customers by a seeded random
 * order, hash-chained exactly as the store chains them, and bulk-inserted into b3iq_events in
 * chunks. Going through decide/evolve means every event is one the ledger could have written.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { canonicalJson } from '../src/canonicalJson.ts';
import { operationEventId } from '../src/commands/handleCommand.ts';
import {
  decide,
  evolve,
  initialState,
  type CustomerAccountCommand,
  type CustomerAccountState,
} from '../src/deciders/customerAccount/decider.ts';
import { customerStreamName, type CustomerAccountEvent } from '../src/events/customerAccount.ts';
import { chainHash, genesisHash } from '../src/eventStore/hashChain.ts';
import type { JsonObject, StoredEvent } from '../src/eventStore/port.ts';
import { customerAccountSpec } from '../src/commands/customerAccount.ts';
import { mulberry32 } from '../test/support/random.ts';

export interface FixtureOptions {
  events: number;
  customers: number;
  seed: number;
  /** Rows per INSERT; bounded so one statement never carries more than a few megabytes. */
  chunkSize: number;
  onProgress?: (inserted: number) => void;
}

export interface FixtureSummary {
  events: number;
  /** Rows ledger_entries must hold after a rebuild: one per money movement of a customer. */
  ledgerEntries: number;
  /** Each customer's balances as the decider's own state has them. */
  balances: Map<string, { availableWei: bigint; reservedWei: bigint }>;
}

const weiPerUnit = 10n ** 18n;
const nodeCount = 20;
const nodeShareBps = 8_500;
const maxOpenReservations = 4;
const recordedFrom = Date.UTC(2026, 0, 1);

interface Customer {
  id: string;
  streamName: string;
  version: bigint;
  state: CustomerAccountState;
  commands: number;
  remaining: number;
}

/** The next command a plausible customer sends: mostly jobs that reserve and then resolve. */
function nextCommand(customer: Customer, random: () => number): CustomerAccountCommand {
  const state = customer.state;
  const customerId = customer.id;
  const serial = `${customerId}-${customer.commands}`;
  if (state.status === 'absent') return { type: 'CreateCustomer', customerId };
  if (state.availableWei < weiPerUnit || random() < 0.03) {
    return { type: 'Deposit', customerId, reference: `dep-${serial}`, amountWei: BigInt(1 + Math.floor(random() * 100)) * weiPerUnit };
  }
  const open = [...state.openReservations];
  if (open.length === 0 || (open.length < maxOpenReservations && random() < 0.5)) {
    const amountWei = (BigInt(1 + Math.floor(random() * 1000)) * weiPerUnit) / 1000n;
    return { type: 'Reserve', customerId, jobId: `job-${serial}`, amountWei: amountWei < state.availableWei ? amountWei : state.availableWei };
  }
  const [jobId, reservedWei] = open[0]!;
  if (random() < 0.15) return { type: 'Release', customerId, jobId, reason: 'job_failed' };
  const costWei = (reservedWei * BigInt(Math.floor(random() * 101))) / 100n;
  return { type: 'Capture', customerId, jobId, costWei, nodeId: `node-${Math.floor(random() * nodeCount)}`, nodeShareBps };
}

function entriesOf(event: CustomerAccountEvent): number {
  if (event.type === 'CustomerCreated') return 0;
  if (event.type === 'ReservationCaptured') return event.data.released_wei === '0' ? 1 : 2;
  return 1;
}

/** Generates the log in order and hands it out a chunk at a time, chained as the store chains it. */
class LogGenerator {
  private readonly random: () => number;
  private readonly all: Customer[];
  /** Customers with events still to write; removed by swapping with the last, so picking stays O(1). */
  private readonly live: Customer[];
  private position = 0n;
  private previousHash = genesisHash;
  ledgerEntries = 0;

  constructor(readonly options: FixtureOptions) {
    this.random = mulberry32(options.seed);
    const perCustomer = Math.floor(options.events / options.customers);
    this.all = Array.from({ length: options.customers }, (_, index) => {
      const id = `cus_${index.toString().padStart(6, '0')}`;
      const extra = index < options.events % options.customers ? 1 : 0;
      return { id, streamName: customerStreamName(id), version: 0n, state: initialState(), commands: 0, remaining: perCustomer + extra };
    });
    this.live = this.all.filter((customer) => customer.remaining > 0);
  }

  get customers(): readonly Customer[] {
    return this.all;
  }

  nextChunk(size: number): StoredEvent[] {
    const chunk: StoredEvent[] = [];
    while (chunk.length < size && this.live.length > 0) {
      const index = Math.floor(this.random() * this.live.length);
      const customer = this.live[index]!;
      chunk.push(...this.step(customer));
      if (customer.remaining <= 0) {
        this.live[index] = this.live[this.live.length - 1]!;
        this.live.pop();
      }
    }
    return chunk;
  }

  private step(customer: Customer): StoredEvent[] {
    const command = nextCommand(customer, this.random);
    // Ids and metadata exactly as the command handler derives them.
    const key = customerAccountSpec.operationKey(command);
    const intentHash = createHash('sha256').update(canonicalJson(customerAccountSpec.intent(command))).digest('hex');
    const metadata: JsonObject = { operation: key, intent_hash: intentHash };
    const events = decide(command, customer.state);
    customer.commands += 1;
    return events.map((event, index) => {
      customer.state = evolve(customer.state, event);
      customer.version += 1n;
      customer.remaining -= 1;
      this.position += 1n;
      this.ledgerEntries += entriesOf(event);
      const fields = {
        position: this.position,
        eventId: operationEventId(customer.streamName, key, index),
        streamName: customer.streamName,
        streamVersion: customer.version,
        type: event.type,
        data: event.data as JsonObject,
        metadata,
        recordedAt: new Date(recordedFrom + Number(this.position) * 10),
      };
      this.previousHash = chainHash(this.previousHash, fields);
      return { ...fields, hash: this.previousHash };
    });
  }
}

/**
 * One chunk as a single JSON document: JSON.stringify escapes in native code, where pg's array
 * parameters would escape every element in JavaScript.
 */
export function insertChunk(pool: pg.Pool, rows: StoredEvent[]): Promise<unknown> {
  const document = JSON.stringify(
    rows.map((row) => ({
      position: String(row.position),
      event_id: row.eventId,
      stream_name: row.streamName,
      stream_version: String(row.streamVersion),
      type: row.type,
      data: row.data,
      metadata: row.metadata,
      recorded_at: row.recordedAt.toISOString(),
      hash: row.hash,
    })),
  );
  return pool.query(
    `INSERT INTO b3iq_events (position, event_id, stream_name, stream_version, type, data, metadata, recorded_at, hash)
     SELECT * FROM json_to_recordset($1::json)
       AS r(position bigint, event_id text, stream_name text, stream_version bigint, type text,
            data jsonb, metadata jsonb, recorded_at timestamptz, hash text)`,
    [document],
  );
}

/**
 * Writes the whole log into an empty b3iq_events. While the server inserts one chunk, the next one
 * is generated and hashed, so both cores stay busy.
 */
export async function loadFixture(pool: pg.Pool, options: FixtureOptions): Promise<FixtureSummary> {
  if (options.events < options.customers) throw new Error('need at least one event per customer');
  const generator = new LogGenerator(options);
  let inserting: Promise<unknown> = Promise.resolve();
  let inserted = 0;
  for (;;) {
    const chunk = generator.nextChunk(options.chunkSize);
    await inserting;
    if (chunk.length === 0) break;
    inserting = insertChunk(pool, chunk).then(() => {
      inserted += chunk.length;
      options.onProgress?.(inserted);
    });
  }
  const balances = new Map(
    generator.customers.map((customer) => {
      const state = customer.state;
      const balance = state.status === 'open' ? { availableWei: state.availableWei, reservedWei: state.reservedWei } : { availableWei: 0n, reservedWei: 0n };
      return [customer.id, balance];
    }),
  );
  return { events: inserted, ledgerEntries: generator.ledgerEntries, balances };
}
