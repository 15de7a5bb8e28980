import type { AuditCrypto } from './auditCrypto.ts';
import { AuditTree } from './auditTree.ts';
import { bytesToHex, hexToBytes, utf8Encoder } from './encoding.ts';
import { isRecord, readCount, readHash, readPattern, readText, readWei, show, type EventContext } from './findings.ts';

/**
 * The payout batch checks (issue 4, payout batches; src/events/payoutBatch.ts): a batch takes only
 * payout rows that PayoutAccrued events created, each exactly as accrued, eligible under the
 * batch's cutoff and node, in accrual order, and not in another live batch; its count, total and
 * Merkle root (leaves `b3iq-payout-leaf-v1`, src/payouts/leaf.ts, hashed as RFC 9162) follow from
 * those rows; it moves created → submitted → finalized, or created/submitted → reset, which returns
 * its rows; and finalization moves exactly each node's share of the batch out of its payable account
 * (the transfers themselves are applied and kept non-negative by the money checks).
 */

export const payoutLedgerStream = 'payout-ledger';
const leafVersion = 'b3iq-payout-leaf-v1';
const position = /^[1-9][0-9]{0,18}$/;
const transactionHash = /^0x[0-9a-f]{64}$/;

export interface PayoutRow {
  payoutId: string;
  receiptHash: string;
  jobId: string;
  nodeId: string;
  amountWei: bigint;
  position: number;
  recordedAt: string;
}

interface BatchAudit {
  status: 'created' | 'submitted' | 'finalized' | 'reset';
  payoutIds: string[];
  nodeTotals: Map<string, bigint>;
  transactionHash: string | null;
}

export interface PayoutTotals {
  batches: Record<BatchAudit['status'], number>;
  pendingRows: number;
  rowsInLiveBatches: number;
  settledWei: bigint;
}

export class PayoutAudit {
  /** Accrued rows in no live batch. */
  private readonly pending = new Map<string, PayoutRow>();
  /** Rows of created or submitted batches; rows of finalized batches are settled and forgotten. */
  private readonly claimed = new Map<string, PayoutRow>();
  private readonly batches = new Map<string, BatchAudit>();
  settledWei = 0n;

  constructor(private readonly crypto: AuditCrypto) {}

  accrued(row: PayoutRow): void {
    this.pending.set(row.payoutId, row);
  }

  get totals(): PayoutTotals {
    const batches = { created: 0, submitted: 0, finalized: 0, reset: 0 };
    for (const batch of this.batches.values()) batches[batch.status] += 1;
    return { batches, pendingRows: this.pending.size, rowsInLiveBatches: this.claimed.size, settledWei: this.settledWei };
  }

  apply(context: EventContext): void {
    if (!context.type.startsWith('PayoutBatch')) return;
    if (context.streamName !== payoutLedgerStream) context.fail('event.stream', payoutLedgerStream, context.streamName);
    const batchId = readText(context, 'batch_id');
    if (batchId === undefined) return;
    if (context.type === 'PayoutBatchCreated') return this.created(context, batchId);
    const batch = this.batches.get(batchId);
    if (batch === undefined) return context.fail('payout.batch', `a created batch ${batchId}`, 'none');
    if (context.type === 'PayoutBatchSubmitted') return this.submitted(context, batch);
    if (context.type === 'PayoutBatchFinalized') return this.finalized(context, batch);
    if (context.type === 'PayoutBatchReset') return this.reset(context, batch);
  }

  private created(context: EventContext, batchId: string): void {
    const cutoff = readPattern(context, 'cutoff_position', position, 'a decimal position');
    const count = readCount(context, 'payout_count');
    const totalWei = readWei(context, 'total_amount_wei');
    const root = readHash(context, 'merkle_root');
    const rows = context.data['payouts'];
    if (cutoff === undefined || count === undefined || totalWei === undefined || root === undefined) return;
    if (!Array.isArray(rows) || rows.length === 0) return context.fail('event.schema', 'PayoutBatchCreated.payouts as a non-empty array', show(rows));
    if (this.batches.has(batchId)) return context.fail('payout.batch', `batch ${batchId} created once`, 'a second PayoutBatchCreated');
    if (context.data['leaf_version'] !== leafVersion) context.fail('payout.batch', `leaf_version ${leafVersion}`, show(context.data['leaf_version']));
    const taken = this.takeRows(context, rows as unknown[], Number(cutoff));
    const sumWei = taken.reduce((sum, row) => sum + row.amountWei, 0n);
    if (count !== rows.length) context.fail('payout.batch', `payout_count ${rows.length}`, String(count));
    if (totalWei !== sumWei) context.fail('payout.batch', `total_amount_wei ${sumWei}`, String(totalWei));
    const recomputed = this.merkleRoot(rows as Array<Record<string, unknown>>);
    if (recomputed !== root) context.fail('payout.root', `merkle_root ${recomputed} of the listed rows`, root);
    const nodeTotals = new Map<string, bigint>();
    for (const row of taken) nodeTotals.set(row.nodeId, (nodeTotals.get(row.nodeId) ?? 0n) + row.amountWei);
    this.batches.set(batchId, { status: 'created', payoutIds: taken.map((row) => row.payoutId), nodeTotals, transactionHash: null });
  }

  /** Each listed row must be a pending accrued row, as accrued, eligible, and in accrual order. */
  private takeRows(context: EventContext, rows: unknown[], cutoff: number): PayoutRow[] {
    const cutoffTime = context.data['cutoff_time'];
    const node = context.data['node_id'];
    const taken: PayoutRow[] = [];
    let previous = 0;
    for (const entry of rows) {
      const listed = isRecord(entry) ? entry : {};
      const payoutId = String(listed['payout_id']);
      const row = this.pending.get(payoutId);
      if (row === undefined) {
        const found = this.claimed.has(payoutId) ? 'a row of another live batch' : 'no pending row (never accrued, or settled)';
        context.fail('payout.row', `pending payout ${payoutId}`, found);
        continue;
      }
      const expected = { payout_id: row.payoutId, receipt_hash: row.receiptHash, job_id: row.jobId, node_id: row.nodeId, amount_wei: String(row.amountWei), accrued_position: String(row.position) };
      if (JSON.stringify(listed, Object.keys(expected).sort()) !== JSON.stringify(expected, Object.keys(expected).sort()) || Object.keys(listed).length !== 6) {
        context.fail('payout.row', `row ${show(expected)} as accrued`, show(listed));
      }
      if (row.position > cutoff) context.fail('payout.row', `a row accrued at or before ${cutoff}`, `${payoutId} accrued at ${row.position}`);
      if (typeof cutoffTime === 'string' && Date.parse(row.recordedAt) > Date.parse(cutoffTime)) {
        context.fail('payout.row', `a row accrued by ${cutoffTime}`, `${payoutId} accrued at ${row.recordedAt}`);
      }
      if (node !== null && node !== undefined && row.nodeId !== node) context.fail('payout.row', `rows of node ${String(node)}`, `${payoutId} of ${row.nodeId}`);
      if (row.position <= previous) context.fail('payout.row', 'rows in ascending accrual order', `${payoutId} at ${row.position} after ${previous}`);
      previous = row.position;
      this.pending.delete(payoutId);
      this.claimed.set(payoutId, row);
      taken.push(row);
    }
    return taken;
  }

  /** RFC 9162 root over the rows' b3iq-payout-leaf-v1 leaves, in the order listed. */
  private merkleRoot(rows: Array<Record<string, unknown>>): string {
    const tree = new AuditTree(this.crypto.nodeHash, hexToBytes(this.crypto.sha256Hex(new Uint8Array(0))));
    for (const row of rows) {
      const text = JSON.stringify;
      const leaf =
        `{"amount_wei":${text(String(row['amount_wei']))},"job_id":${text(String(row['job_id']))},"node_id":${text(String(row['node_id']))},` +
        `"payout_id":${text(String(row['payout_id']))},"receipt_hash":${text(String(row['receipt_hash']))},"version":${text(leafVersion)}}`;
      tree.append(this.crypto.leafHash(utf8Encoder.encode(leaf)));
    }
    return bytesToHex(tree.root(tree.size));
  }

  private submitted(context: EventContext, batch: BatchAudit): void {
    const hash = readPattern(context, 'transaction_hash', transactionHash, '0x and 64 lowercase hex digits');
    if (hash === undefined) return;
    if (batch.status !== 'created') return context.fail('payout.transition', 'a created batch to submit', `a ${batch.status} batch`);
    batch.status = 'submitted';
    batch.transactionHash = hash;
  }

  private finalized(context: EventContext, batch: BatchAudit): void {
    const hash = readPattern(context, 'transaction_hash', transactionHash, '0x and 64 lowercase hex digits');
    if (hash === undefined) return;
    if (batch.status !== 'submitted') return context.fail('payout.transition', 'a submitted batch to finalize', `a ${batch.status} batch`);
    if (hash !== batch.transactionHash) context.fail('payout.transition', `the submitted transaction ${batch.transactionHash}`, hash);
    const expected = [...batch.nodeTotals]
      .filter(([, amountWei]) => amountWei > 0n)
      .map(([nodeId, amountWei]) => `node:${nodeId}:payable -> external:settlements: ${amountWei}`)
      .sort();
    const transfers = Array.isArray(context.data['transfers']) ? (context.data['transfers'] as unknown[]) : [];
    const found = transfers.map((entry) => (isRecord(entry) ? `${String(entry['from'])} -> ${String(entry['to'])}: ${String(entry['amount_wei'])}` : show(entry))).sort();
    if (expected.join('\n') !== found.join('\n')) context.fail('payout.settlement', `[${expected.join('; ')}]`, `[${found.join('; ')}]`);
    for (const payoutId of batch.payoutIds) {
      const row = this.claimed.get(payoutId);
      if (row !== undefined) this.settledWei += row.amountWei;
      this.claimed.delete(payoutId);
    }
    batch.status = 'finalized';
    batch.payoutIds = [];
  }

  private reset(context: EventContext, batch: BatchAudit): void {
    const count = readCount(context, 'payout_count');
    if (count === undefined) return;
    if (batch.status !== 'created' && batch.status !== 'submitted') return context.fail('payout.transition', 'a created or submitted batch to reset', `a ${batch.status} batch`);
    if (count !== batch.payoutIds.length) context.fail('payout.batch', `payout_count ${batch.payoutIds.length}`, String(count));
    for (const payoutId of batch.payoutIds) {
      const row = this.claimed.get(payoutId);
      this.claimed.delete(payoutId);
      if (row !== undefined) this.pending.set(payoutId, row);
    }
    batch.status = 'reset';
    batch.payoutIds = [];
    batch.nodeTotals = new Map();
  }
}
