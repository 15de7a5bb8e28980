import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { NodeIdentity } from '../receipts/ed25519.ts';
import { computeCostWei, receiptVersion, signedReceiptSchema, signReceipt, type Receipt, type SignedReceipt } from '../receipts/receipt.ts';
import { splitCost } from '../money.ts';
import type { Dispatch } from './dispatch.ts';
import { JsonLinesFile, readLastLines, scanLines } from './privateFiles.ts';

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
 * Every receipt the node signed: appended to `receipts.jsonl` (owner-only), one signed receipt per
 * line, and the most recent ones (bounded) kept in memory for the local API. On open the tail of
 * the file is read back, so the recent receipts survive a restart; older ones are found by a scan.
 */
export class ReceiptLog {
  readonly #recent: SignedReceipt[];
  readonly #maxRecent: number;
  readonly #path: string;
  readonly #file: JsonLinesFile;
  readonly #onWriteError: (error: unknown) => void;

  private constructor(path: string, file: JsonLinesFile, recent: SignedReceipt[], maxRecent: number, onWriteError: (error: unknown) => void) {
    this.#path = path;
    this.#file = file;
    this.#recent = recent;
    this.#maxRecent = maxRecent;
    this.#onWriteError = onWriteError;
  }

  static async open(dataDir: string, maxRecent: number, onWriteError: (error: unknown) => void): Promise<ReceiptLog> {
    const path = join(dataDir, receiptsFileName);
    const file = await JsonLinesFile.open(path);
    // A line that does not parse (torn by a crash, edited by hand) is skipped, not fatal.
    const recent = (await readLastLines(path, maxRecent)).map(parseSignedReceipt).filter((signed) => signed !== null);
    return new ReceiptLog(path, file, recent, maxRecent, onWriteError);
  }

  /** Newest last. */
  recent(): SignedReceipt[] {
    return [...this.#recent];
  }

  /** The signed receipt with this hash: from memory when recent, otherwise from the file. */
  async find(receiptHash: string): Promise<SignedReceipt | null> {
    const recent = this.#recent.find((signed) => signed.receipt_hash === receiptHash);
    if (recent !== undefined) return recent;
    let found: SignedReceipt | null = null;
    // Cheap prefilter: only lines that mention the hash are parsed.
    await scanLines(this.#path, (line) => {
      if (!line.includes(receiptHash)) return false;
      const signed = parseSignedReceipt(line);
      if (signed?.receipt_hash === receiptHash) found = signed;
      return found !== null;
    });
    return found;
  }

  /**
   * Signs, remembers and appends; resolves once the line is written. A failed write is reported
   * and does not withhold the receipt: the signed receipt is valid evidence either way.
   */
  async record(receipt: Receipt, identity: NodeIdentity): Promise<SignedReceipt> {
    const signed = signReceipt(receipt, identity);
    this.#recent.push(signed);
    if (this.#recent.length > this.#maxRecent) this.#recent.shift();
    await this.#file.append(signed).catch(this.#onWriteError);
    return signed;
  }

  async close(): Promise<void> {
    await this.#file.close();
  }
}

function parseSignedReceipt(line: string): SignedReceipt | null {
  try {
    const parsed = signedReceiptSchema.safeParse(JSON.parse(line));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

/**
 * Receipts for chats an app sent with a local key. They have the same signed format as routed
 * receipts, marked in the signed bytes themselves: the job id starts with `local_`, the policy is
 * `b3iq-local-v1`, and every price is zero, so the gateway could never bill one.
 */
export const localPolicyVersion = 'b3iq-local-v1';
export const localJobPrefix = 'local_';

export type ReceiptOrigin = 'router' | 'local';

export function localDispatch(nodeId: string, modelId: string, jobId: string): Dispatch {
  return {
    job_id: jobId,
    node_id: nodeId,
    model_id: modelId,
    policy_version: localPolicyVersion,
    pricing: { prompt_price_per_million_wei: '0', completion_price_per_million_wei: '0' },
    quoted_price_wei: '0',
    reserved_price_wei: '0',
    node_share_bps: 0,
  };
}

export function receiptOrigin(receipt: Pick<Receipt, 'job_id' | 'policy_version'>): ReceiptOrigin {
  return receipt.job_id.startsWith(localJobPrefix) && receipt.policy_version === localPolicyVersion ? 'local' : 'router';
}
