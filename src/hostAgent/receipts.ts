import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { NodeIdentity } from '../receipts/ed25519.ts';
import { computeCostWei, receiptVersion, signReceipt, type Receipt, type SignedReceipt } from '../receipts/receipt.ts';
import { splitCost } from '../money.ts';
import type { Dispatch } from './dispatch.ts';

/**
 * Receipts on the node side: the receipt body from the dispatch terms and the runtime's usage
 * (docs/node-protocol.md, Receipts), and the local record of every receipt signed.
 */

export type Usage = Receipt['usage'];

export interface CompletedJob {
  dispatch: Dispatch;
  nodeId: string;
  runtimeKind: string;
  stream: boolean;
  usage: Usage;
  startedAt: Date;
  completedAt: Date;
  requestSha256: string;
  responseSha256: string;
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * The three counts of a runtime's `usage`, or null when they are missing or inconsistent. Other
 * members (prompt_tokens_details, …) are dropped: the receipt signs exactly these three.
 */
export function usageOf(value: unknown): Usage | null {
  if (typeof value !== 'object' || value === null) return null;
  const { prompt_tokens: prompt, completion_tokens: completion, total_tokens: total } = value as Record<string, unknown>;
  const counts = [prompt, completion, total];
  if (!counts.every((count) => typeof count === 'number' && Number.isSafeInteger(count) && count >= 0)) return null;
  const usage = { prompt_tokens: prompt as number, completion_tokens: completion as number, total_tokens: total as number };
  return usage.total_tokens === usage.prompt_tokens + usage.completion_tokens ? usage : null;
}

/** debited = min(cost, reserved); payout = floor(debited × share / 10 000). */
export function buildReceipt(job: CompletedJob): Receipt {
  const { dispatch } = job;
  const reservedWei = BigInt(dispatch.reserved_price_wei);
  const costWei = computeCostWei(job.usage, dispatch.pricing);
  const debitedWei = costWei < reservedWei ? costWei : reservedWei;
  const { nodePayableWei } = splitCost(debitedWei, dispatch.node_share_bps);
  return {
    version: receiptVersion,
    job_id: dispatch.job_id,
    node_id: job.nodeId,
    model_id: dispatch.model_id,
    runtime_kind: job.runtimeKind,
    stream: job.stream,
    usage: job.usage,
    pricing: dispatch.pricing,
    quoted_price_wei: dispatch.quoted_price_wei,
    reserved_price_wei: dispatch.reserved_price_wei,
    debited_price_wei: debitedWei.toString(10),
    payout_price_wei: nodePayableWei.toString(10),
    policy_version: dispatch.policy_version,
    started_at: job.startedAt.toISOString(),
    completed_at: job.completedAt.toISOString(),
    commitments: { request_sha256: job.requestSha256, response_sha256: job.responseSha256 },
  };
}

const receiptsFileName = 'receipts.jsonl';

/**
 * Every receipt the node signed: the most recent ones in memory (bounded) for the local API, and
 * all of them appended to `receipts.jsonl` (owner-only), one signed receipt per line. Appends are
 * chained so that lines never interleave.
 */
export class ReceiptLog {
  readonly #recent: SignedReceipt[] = [];
  readonly #maxRecent: number;
  readonly #file: FileHandle;
  readonly #onWriteError: (error: unknown) => void;
  #tail: Promise<void> = Promise.resolve();

  private constructor(file: FileHandle, maxRecent: number, onWriteError: (error: unknown) => void) {
    this.#file = file;
    this.#maxRecent = maxRecent;
    this.#onWriteError = onWriteError;
  }

  static async open(dataDir: string, maxRecent: number, onWriteError: (error: unknown) => void): Promise<ReceiptLog> {
    const file = await open(join(dataDir, receiptsFileName), 'a', 0o600);
    await file.chmod(0o600);
    return new ReceiptLog(file, maxRecent, onWriteError);
  }

  /** Newest last. */
  recent(): SignedReceipt[] {
    return [...this.#recent];
  }

  /**
   * Signs, remembers and appends; resolves once the line is written. A failed write is reported
   * and does not withhold the receipt: the signed receipt is valid evidence either way.
   */
  async record(receipt: Receipt, identity: NodeIdentity): Promise<SignedReceipt> {
    const signed = signReceipt(receipt, identity);
    this.#recent.push(signed);
    if (this.#recent.length > this.#maxRecent) this.#recent.shift();
    const line = `${JSON.stringify(signed)}\n`;
    this.#tail = this.#tail.then(() => this.#file.appendFile(line)).catch(this.#onWriteError);
    await this.#tail;
    return signed;
  }

  async close(): Promise<void> {
    await this.#tail;
    await this.#file.close();
  }
}
