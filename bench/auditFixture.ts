/**
 * The log the audit benchmark exports and audits: paid jobs as the gateway records them, with real
 * receipts, countersignatures, transparency leaves and signed checkpoints. Money events come from
 * the customer account decider, job events from the job decider, receipts from the host agent's own
 * buildReceipt/signReceipt with a few node keys, countersignatures from acceptance.ts, and
 * checkpoints from signCheckpoint over a MerkleTree of the leaves; ids, metadata and the hash chain
 * are derived as the command handler and the store derive them. The rows are bulk-inserted into
 * b3iq_events, as bench/rebuildFixture.ts does. Every event is one the ledger could have written,
 * which the benchmark proves by requiring a clean audit.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { canonicalJson } from '../src/canonicalJson.ts';
import { operationEventId } from '../src/commands/handleCommand.ts';
import { customerAccountSpec } from '../src/commands/customerAccount.ts';
import * as account from '../src/deciders/customerAccount/decider.ts';
import * as job from '../src/deciders/job/decider.ts';
import { customerStreamName } from '../src/events/customerAccount.ts';
import { jobStreamName } from '../src/events/job.ts';
import { nodeStreamName, modelStreamName } from '../src/events/node.ts';
import { transparencyStreamName } from '../src/events/transparency.ts';
import { chainHash, genesisHash } from '../src/eventStore/hashChain.ts';
import type { JsonObject, StoredEvent } from '../src/eventStore/port.ts';
import { buildReceipt } from '../src/hostAgent/receipts.ts';
import { acceptance, countersign } from '../src/receipts/acceptance.ts';
import { generateIdentity, type NodeIdentity } from '../src/receipts/ed25519.ts';
import { signReceipt } from '../src/receipts/receipt.ts';
import { checkpointSignerFromIdentity, signCheckpoint } from '../src/transparency/checkpoint.ts';
import { leafHash, MerkleTree } from '../src/transparency/merkle.ts';
import { insertChunk } from './rebuildFixture.ts';
import { mulberry32 } from '../test/support/random.ts';

export interface AuditFixtureOptions {
  /** Accepted receipts to write; a twentieth as many jobs more fail and are released. */
  receipts: number;
  customers: number;
  nodes: number;
  seed: number;
  chunkSize: number;
  onProgress?: (inserted: number, receipts: number) => void;
}

export interface AuditFixtureSummary {
  events: number;
  receipts: number;
  checkpoints: number;
  ledger: NodeIdentity;
}

const modelId = 'b3iq-bench-model';
const policyVersion = 'bench-1';
const pricing = { prompt_price_per_million_wei: '2000000000', completion_price_per_million_wei: '6000000000' };
const nodeShareBps = 9_000;
const maxTokens = 1_024;
const failureEvery = 20;
/** Leaves are appended in batches, as the sequencer does once it has read the acceptances back. */
const leavesPerAppend = 50;
const checkpointEveryLeaves = 1_000;
const recordedFrom = Date.UTC(2026, 0, 1);

class LogWriter {
  private position = 0n;
  private previousHash = genesisHash;
  private readonly versions = new Map<string, bigint>();
  chunk: StoredEvent[] = [];

  get count(): bigint {
    return this.position;
  }

  append(streamName: string, operation: string, intent: JsonObject, events: ReadonlyArray<{ type: string; data: unknown }>): bigint[] {
    const metadata: JsonObject = { operation, intent_hash: createHash('sha256').update(canonicalJson(intent)).digest('hex') };
    return events.map((event, index) => {
      const version = (this.versions.get(streamName) ?? 0n) + 1n;
      this.versions.set(streamName, version);
      this.position += 1n;
      const fields = {
        position: this.position,
        eventId: operationEventId(streamName, operation, index),
        streamName,
        streamVersion: version,
        type: event.type,
        data: event.data as JsonObject,
        metadata,
        recordedAt: new Date(recordedFrom + Number(this.position) * 5),
      };
      this.previousHash = chainHash(this.previousHash, fields);
      this.chunk.push({ ...fields, hash: this.previousHash });
      return this.position;
    });
  }
}

interface Customer {
  id: string;
  state: account.CustomerAccountState;
  deposits: number;
}

interface Node {
  id: string;
  identity: NodeIdentity;
}

/** Generates the log job by job and hands it out in chunks. */
class AuditLogGenerator {
  readonly writer = new LogWriter();
  readonly ledger = generateIdentity();
  private readonly random: () => number;
  private readonly customers: Customer[];
  private readonly nodes: Node[];
  private readonly tree = new MerkleTree();
  private readonly signer;
  private readonly origin;
  private pending: Array<{ position: bigint; receiptHash: string; jobId: string; leafHash: Uint8Array }> = [];
  private checkpointedSize = 0;
  private jobs = 0;
  receipts = 0;
  checkpoints = 0;

  constructor(private readonly options: AuditFixtureOptions) {
    this.random = mulberry32(options.seed);
    // The sequencer's origin names the log by its key; any valid key name would do here.
    this.origin = `b3iq.ledger/${this.ledger.keyId.slice('ed25519:'.length)}`;
    this.signer = checkpointSignerFromIdentity(this.origin, this.ledger);
    this.nodes = Array.from({ length: options.nodes }, () => {
      const identity = generateIdentity();
      return { id: `node_${createHash('sha256').update(identity.publicKeyRaw).digest('hex').slice(0, 24)}`, identity };
    });
    this.customers = Array.from({ length: options.customers }, (_, index) => ({ id: `cus_${index.toString().padStart(6, '0')}`, state: account.initialState(), deposits: 0 }));
  }

  setup(): void {
    for (const node of this.nodes) {
      const data = { node_id: node.id, public_key_ed25519: node.identity.publicKeyBase64url, key_id: node.identity.keyId };
      this.writer.append(nodeStreamName(node.id), 'enroll', { type: 'EnrollNode' }, [{ type: 'NodeEnrolled', data }]);
    }
    const price = { model_id: modelId, ...pricing, policy_version: policyVersion };
    this.writer.append(modelStreamName(modelId), `price:${policyVersion}`, { type: 'SetModelPrice' }, [{ type: 'ModelPriceSet', data: price }]);
    for (const customer of this.customers) this.account(customer, { type: 'CreateCustomer', customerId: customer.id });
  }

  /** One paid job, or a failed one; then the sequencer's leaves and checkpoints that are due. */
  nextJob(): void {
    this.jobs += 1;
    const customer = this.customers[Math.floor(this.random() * this.customers.length)]!;
    const node = this.nodes[Math.floor(this.random() * this.nodes.length)]!;
    const jobId = `job_${this.jobs.toString(16).padStart(24, '0')}`;
    const promptTokens = 5 + Math.floor(this.random() * 500);
    const quoteWei = (BigInt(promptTokens + 40) * 2_000_000_000n + BigInt(maxTokens) * 6_000_000_000n + 999_999n) / 1_000_000n;
    if (customer.state.status === 'open' && customer.state.availableWei < quoteWei) {
      customer.deposits += 1;
      this.account(customer, { type: 'Deposit', customerId: customer.id, reference: `dep-${customer.id}-${customer.deposits}`, amountWei: 10n ** 12n });
    }
    this.account(customer, { type: 'Reserve', customerId: customer.id, jobId, amountWei: quoteWei });
    const request = {
      job_id: jobId, customer_id: customer.id, key_id: `key_${customer.id}`, model_id: modelId, stream: this.random() < 0.5,
      max_tokens: maxTokens, quoted_price_wei: quoteWei.toString(), policy_version: policyVersion, ...pricing,
    };
    this.jobEvents(jobId, 'start', { type: 'StartJob', attempt: jobId }, job.decide({ type: 'StartJob', request, attemptId: jobId }, job.initialState()));
    const started = { status: 'started' as const, jobId, customerId: customer.id, requestSha256: null };
    if (this.jobs % failureEvery === 0) {
      this.account(customer, { type: 'Release', customerId: customer.id, jobId, reason: 'router_dispatch_failed' });
      const outcome = { attempts: [{ nodeId: node.id, failure: 'http_502' }], firstByteMs: null, completion: null, receipt: null, failure: 'router_dispatch_failed' };
      this.jobEvents(jobId, 'finish', { type: 'FinishJob' }, job.decide({ type: 'FinishJob', jobId, outcome }, started));
    } else {
      this.completeJob(customer, node, request, promptTokens, started);
    }
    this.sequence(false);
  }

  private completeJob(customer: Customer, node: Node, request: { job_id: string; stream: boolean; quoted_price_wei: string }, promptTokens: number, started: job.JobState): void {
    const jobId = request.job_id;
    const completionTokens = 1 + Math.floor(this.random() * maxTokens);
    const usage = { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
    const at = new Date(recordedFrom + Number(this.writer.count) * 5);
    const dispatch = {
      job_id: jobId, node_id: node.id, model_id: modelId, policy_version: policyVersion, pricing,
      quoted_price_wei: request.quoted_price_wei, reserved_price_wei: request.quoted_price_wei, node_share_bps: nodeShareBps,
    };
    const digest = createHash('sha256').update(jobId).digest('hex');
    const receipt = buildReceipt({
      dispatch, nodeId: node.id, runtimeKind: 'vllm', stream: request.stream, usage, startedAt: at, completedAt: at, requestSha256: digest, responseSha256: digest,
    });
    const signed = signReceipt(receipt, node.identity);
    this.account(customer, { type: 'Capture', customerId: customer.id, jobId, costWei: BigInt(receipt.debited_price_wei), nodeId: node.id, nodeShareBps });
    const accepted = acceptance({
      receipt_hash: signed.receipt_hash, job_id: jobId, node_id: node.id, debited_price_wei: receipt.debited_price_wei, payout_price_wei: receipt.payout_price_wei,
    });
    const outcome: job.JobOutcome = {
      attempts: [{ nodeId: node.id, failure: null }],
      firstByteMs: 20,
      completion: { nodeId: node.id, usage, latencyMs: 200 },
      receipt: {
        accepted: true,
        nodeId: node.id,
        payoutWei: receipt.payout_price_wei,
        receipt: { ...signed, ledger_key_id: this.ledger.keyId, ledger_countersignature: countersign(this.ledger, accepted) },
      },
      failure: null,
    };
    const events = job.decide({ type: 'FinishJob', jobId, outcome }, started);
    const positions = this.jobEvents(jobId, 'finish', { type: 'FinishJob' }, events);
    const position = positions[events.findIndex((event) => event.type === 'ReceiptAccepted')]!;
    this.pending.push({ position, receiptHash: signed.receipt_hash, jobId, leafHash: leafHash(Buffer.from(signed.receipt_canonical, 'utf8')) });
    this.receipts += 1;
  }

  /** The sequencer: leaves in acceptance order in batches, a checkpoint every so many leaves. */
  sequence(flush: boolean): void {
    if (this.pending.length >= leavesPerAppend || (flush && this.pending.length > 0)) {
      const leaves = this.pending.splice(0, leavesPerAppend).map((leaf) => {
        const data = {
          leaf_index: this.tree.append(leaf.leafHash),
          receipt_hash: leaf.receiptHash,
          job_id: leaf.jobId,
          accepted_position: String(leaf.position),
          leaf_hash: Buffer.from(leaf.leafHash).toString('hex'),
        };
        return { type: 'ReceiptLogged', data };
      });
      leaves.forEach((leaf) => this.writer.append(transparencyStreamName, `leaf:${leaf.data.accepted_position}`, { type: 'LogLeaf' }, [leaf]));
    }
    const size = this.tree.size;
    if (size - this.checkpointedSize >= checkpointEveryLeaves || (flush && size > this.checkpointedSize && this.pending.length === 0)) {
      const rootHash = this.tree.root(size);
      const note = signCheckpoint({ origin: this.origin, treeSize: size, rootHash }, this.signer);
      const data = { tree_size: size, root_hash: Buffer.from(rootHash).toString('hex'), key_name: this.origin, key_id: this.ledger.keyId, note };
      this.writer.append(transparencyStreamName, `checkpoint:${size}`, { type: 'PublishCheckpoint' }, [{ type: 'CheckpointPublished', data }]);
      this.checkpointedSize = size;
      this.checkpoints += 1;
    }
    if (flush && this.pending.length > 0) this.sequence(true);
  }

  private account(customer: Customer, command: account.CustomerAccountCommand): bigint[] {
    const events = account.decide(command, customer.state);
    for (const event of events) customer.state = account.evolve(customer.state, event);
    return this.writer.append(customerStreamName(customer.id), customerAccountSpec.operationKey(command), customerAccountSpec.intent(command), events);
  }

  private jobEvents(jobId: string, operation: string, intent: JsonObject, events: ReadonlyArray<{ type: string; data: unknown }>): bigint[] {
    return this.writer.append(jobStreamName(jobId), operation, intent, events);
  }
}

/** Writes the whole log into an empty b3iq_events; the next chunk is generated while one is inserted. */
export async function loadAuditFixture(pool: pg.Pool, options: AuditFixtureOptions): Promise<AuditFixtureSummary> {
  const generator = new AuditLogGenerator(options);
  generator.setup();
  let inserting: Promise<unknown> = Promise.resolve();
  let inserted = 0;
  let done = false;
  while (!done) {
    while (generator.writer.chunk.length < options.chunkSize && generator.receipts < options.receipts) generator.nextJob();
    if (generator.receipts >= options.receipts) {
      generator.sequence(true);
      done = true;
    }
    const chunk = generator.writer.chunk;
    generator.writer.chunk = [];
    await inserting;
    const receipts = generator.receipts;
    inserting = insertChunk(pool, chunk).then(() => {
      inserted += chunk.length;
      options.onProgress?.(inserted, receipts);
    });
  }
  await inserting;
  return { events: inserted, receipts: generator.receipts, checkpoints: generator.checkpoints, ledger: generator.ledger };
}
