import type { AuditCrypto, SignatureQueue } from './auditCrypto.ts';
import { decodeBase64url, keyIdOf, keyIdPattern, publicKeyPattern, signaturePattern, utf8Encoder } from './encoding.ts';
import { isRecord, readHash, readObject, readPattern, readText, readWei, show, type EventContext } from './findings.ts';
import type { Capture, MoneyListener } from './moneyAudit.ts';
import type { PayoutRow } from './payoutAudit.ts';
import { acceptanceBytes, expectedDebit, parseReceipt, weiOf } from './receiptFormat.ts';

/**
 * The receipt checks of the audit (DESIGN §4): nodes' enrolled keys; for every ReceiptAccepted its
 * hash over the exact signed bytes, the node's signature with the key that node enrolled, the
 * ledger's countersignature over the b3iq-receipt-acceptance-v1 document (src/receipts/acceptance.ts),
 * and its terms against the job (JobRequested, JobCompleted) and the capture the gateway made for
 * it (src/gateway/receiptCheck.ts lists the same terms); a receipt per job at most; PayoutAccrued
 * equal to the receipt's payout. Signatures go to a queue and come back as verdicts.
 */

const maxReceiptBytes = 16_384;
const receiptVersion = 'b3iq-receipt-v1';

const settled = 'settled';

export type BillingStatus = 'reserved' | 'captured' | 'released';

interface JobAudit {
  customerId: string;
  modelId: string;
  quotedWei: string;
  policyVersion: string;
  pricing: Record<string, unknown>;
  billing: BillingStatus;
  capture: Capture | null;
  usage: Record<string, unknown> | null;
  receipt: { hash: string; nodeId: string; payoutWei: bigint } | null;
  accrued: boolean;
}

export interface NodeTotals {
  publicKey: string;
  receipts: number;
  debitedWei: bigint;
  payoutWei: bigint;
  accruedWei: bigint;
}

export type StatusTotals = Record<BillingStatus, { count: number; debitedWei: bigint; payoutWei: bigint }>;

export interface AcceptedReceipt {
  position: number;
  receiptHash: string;
  jobId: string;
  leafHash: Uint8Array;
}

export class ReceiptAudit implements MoneyListener {
  readonly nodes = new Map<string, NodeTotals>();
  /**
   * Open jobs in full; a job whose receipt was paid, or that ended with its reservation resolved,
   * shrinks to the marker `settled`, which is all later checks need: it keeps memory per finished
   * job to its map entry.
   */
  private readonly jobs = new Map<string, JobAudit | typeof settled>();
  readonly jobTotals: StatusTotals = {
    reserved: { count: 0, debitedWei: 0n, payoutWei: 0n },
    captured: { count: 0, debitedWei: 0n, payoutWei: 0n },
    released: { count: 0, debitedWei: 0n, payoutWei: 0n },
  };
  receipts = 0;

  constructor(
    private readonly crypto: AuditCrypto,
    private readonly signatures: SignatureQueue,
    private readonly ledgerKey: () => { publicKey: string; keyId: string } | null,
    private readonly listener: { accepted(receipt: AcceptedReceipt): void; accrued(row: PayoutRow): void },
  ) {}

  apply(context: EventContext): void {
    switch (context.type) {
      case 'NodeEnrolled':
        return this.nodeEnrolled(context);
      case 'JobRequested':
        return this.jobRequested(context);
      case 'JobCompleted':
        return this.jobCompleted(context);
      case 'ReceiptAccepted':
        return this.receiptAccepted(context);
      case 'PayoutAccrued':
        return this.payoutAccrued(context);
      case 'NodeReceiptRecorded':
        return this.nodeReceiptRecorded(context);
      case 'ReceiptRejected':
      case 'JobFailed':
        return this.jobEndedWithoutReceipt(context);
      case 'JobRouted':
      case 'JobDispatchFailed':
      case 'JobFirstByte':
        return void this.job(context);
      default:
        return;
    }
  }

  captured(jobId: string, capture: Capture): void {
    const job = this.jobs.get(jobId);
    // Reservations made outside the gateway have no job; the jobs projection skips them too.
    if (job === undefined || job === settled || job.billing !== 'reserved') return;
    this.moveStatus(job, 'captured', capture.costWei, capture.nodePayableWei);
    job.capture = capture;
  }

  released(jobId: string): void {
    const job = this.jobs.get(jobId);
    if (job === undefined || job === settled || job.billing !== 'reserved') return;
    this.moveStatus(job, 'released', 0n, 0n);
  }

  private moveStatus(job: JobAudit, status: BillingStatus, debitedWei: bigint, payoutWei: bigint): void {
    this.jobTotals[job.billing].count -= 1;
    job.billing = status;
    const totals = this.jobTotals[status];
    totals.count += 1;
    totals.debitedWei += debitedWei;
    totals.payoutWei += payoutWei;
  }

  private nodeEnrolled(context: EventContext): void {
    const nodeId = readText(context, 'node_id');
    const publicKey = readPattern(context, 'public_key_ed25519', publicKeyPattern, 'base64url of a 32-byte key');
    const keyId = readPattern(context, 'key_id', keyIdPattern, 'ed25519:<16 hex>');
    if (nodeId === undefined || publicKey === undefined || keyId === undefined) return;
    if (context.streamName !== `node-${nodeId}`) context.fail('event.stream', `node-${nodeId}`, context.streamName);
    const derivedId = `node_${this.crypto.sha256Hex(decodeBase64url(publicKey)).slice(0, 24)}`;
    if (derivedId !== nodeId) context.fail('node.enrollment', `node id ${derivedId} derived from the key`, nodeId);
    if (keyIdOf(this.crypto.sha256Hex, publicKey) !== keyId) context.fail('node.enrollment', keyIdOf(this.crypto.sha256Hex, publicKey), keyId);
    const known = this.nodes.get(nodeId);
    if (known !== undefined && known.publicKey !== publicKey) context.fail('node.enrollment', `node ${nodeId} keeps key ${known.publicKey}`, publicKey);
    if (known === undefined) this.nodes.set(nodeId, { publicKey, receipts: 0, debitedWei: 0n, payoutWei: 0n, accruedWei: 0n });
  }

  private jobRequested(context: EventContext): void {
    const jobId = this.jobStream(context);
    const customerId = readText(context, 'customer_id');
    const modelId = readText(context, 'model_id');
    const quoted = readWei(context, 'quoted_price_wei');
    const policyVersion = readText(context, 'policy_version');
    const prompt = readWei(context, 'prompt_price_per_million_wei');
    const completion = readWei(context, 'completion_price_per_million_wei');
    if (jobId === undefined || customerId === undefined || modelId === undefined || quoted === undefined) return;
    if (policyVersion === undefined || prompt === undefined || completion === undefined) return;
    if (this.jobs.has(jobId)) return context.fail('job.duplicate', `job ${jobId} requested once`, 'a second JobRequested');
    const pricing = { prompt_price_per_million_wei: String(prompt), completion_price_per_million_wei: String(completion) };
    this.jobs.set(jobId, {
      customerId, modelId, quotedWei: String(quoted), policyVersion, pricing, billing: 'reserved', capture: null, usage: null, receipt: null, accrued: false,
    });
    this.jobTotals.reserved.count += 1;
  }

  /** A customer is charged only for a completion whose receipt was accepted (docs/decisions.md). */
  private jobEndedWithoutReceipt(context: EventContext): void {
    const job = this.job(context);
    if (job === undefined || job === settled) return;
    if (job.capture !== null && job.receipt === null) {
      context.fail('money.capture', `no capture of job ${String(context.data['job_id'])} without an accepted receipt`, `a capture of ${job.capture.costWei} wei`);
    }
    if (job.billing !== 'reserved' && job.receipt === null) this.jobs.set(context.data['job_id'] as string, settled);
  }

  /** Jobs charged whose receipt is not in the log yet: in flight when a live ledger was exported. */
  get capturedAwaitingReceipt(): number {
    let count = 0;
    for (const job of this.jobs.values()) if (job !== settled && job.capture !== null && job.receipt === null) count += 1;
    return count;
  }

  private jobCompleted(context: EventContext): void {
    const job = this.job(context);
    const usage = readObject(context, 'usage');
    if (job === undefined || job === settled || usage === undefined) return;
    job.usage = usage;
  }

  /** The job of a job event; reports an event for a job never requested, or on another stream. */
  private job(context: EventContext): JobAudit | typeof settled | undefined {
    const jobId = this.jobStream(context);
    if (jobId === undefined) return undefined;
    const job = this.jobs.get(jobId);
    if (job === undefined) context.fail('job.unknown', `a JobRequested for ${jobId} before its other events`, 'none');
    return job;
  }

  private jobStream(context: EventContext): string | undefined {
    const jobId = readText(context, 'job_id');
    if (jobId !== undefined && context.streamName !== `job-${jobId}`) context.fail('event.stream', `job-${jobId}`, context.streamName);
    return jobId;
  }

  private receiptAccepted(context: EventContext): void {
    const found = this.job(context);
    if (found === settled) context.fail('receipt.duplicate', 'one accepted receipt per job', 'a receipt for a job already paid or ended');
    const job = found === settled ? undefined : found;
    const fields = readAcceptance(context);
    if (fields === undefined) return;
    const { bytes, node } = this.checkSignedBytes(context, fields);
    const receipt = parseReceipt(context, fields.text);
    if (receipt === null) return;
    const { jobId, nodeId, receiptHash } = fields;
    this.checkTerms(context, receipt, job, nodeId);
    this.countersignature(context, { ...fields, receipt });
    if (job !== undefined) {
      if (job.receipt !== null) context.fail('receipt.duplicate', `one accepted receipt for job ${jobId}`, `a second: ${receiptHash}`);
      job.receipt = { hash: receiptHash, nodeId, payoutWei: weiOf(receipt['payout_price_wei']) };
    }
    if (node !== undefined) {
      node.receipts += 1;
      node.debitedWei += weiOf(receipt['debited_price_wei']);
      node.payoutWei += weiOf(receipt['payout_price_wei']);
    }
    this.receipts += 1;
    this.listener.accepted({ position: context.position, receiptHash, jobId, leafHash: this.crypto.leafHash(bytes) });
  }

  /**
   * Evidence a node submitted itself (never billed): its exact bytes hash to the stated hash, name
   * the node, and carry the node's signature under the key it enrolled with.
   */
  private nodeReceiptRecorded(context: EventContext): void {
    const nodeId = readText(context, 'node_id');
    const receiptHash = readHash(context, 'receipt_hash');
    const text = readText(context, 'receipt_canonical');
    const signature = readPattern(context, 'signature_ed25519', signaturePattern, 'base64url of a 64-byte signature');
    if (nodeId === undefined || receiptHash === undefined || text === undefined || signature === undefined) return;
    if (context.streamName !== `node-receipts-${nodeId}`) context.fail('event.stream', `node-receipts-${nodeId}`, context.streamName);
    const bytes = utf8Encoder.encode(text);
    const hash = this.crypto.sha256Hex(bytes);
    if (hash !== receiptHash) context.fail('node_receipt.hash', hash, receiptHash);
    const node = this.nodes.get(nodeId);
    if (node === undefined) return context.fail('node_receipt.node_key', `an enrolled node ${nodeId}`, 'no NodeEnrolled');
    const receipt = parseReceipt(context, text);
    if (receipt !== null && receipt['node_id'] !== nodeId) context.fail('node_receipt.terms', `node_id ${nodeId}`, show(receipt['node_id']));
    this.signatures.submit({ position: context.position, check: 'node_receipt.signature', publicKey: node.publicKey, message: bytes, signature, detail: `node receipt ${receiptHash}` });
  }

  /** The hash of the exact bytes, the node's enrolled key, and (queued) the node's signature over them. */
  private checkSignedBytes(context: EventContext, fields: Acceptance): { bytes: Uint8Array; node: NodeTotals | undefined } {
    const { nodeId, nodeKey, receiptHash } = fields;
    const bytes = utf8Encoder.encode(fields.text);
    if (bytes.length > maxReceiptBytes) context.fail('receipt.format', `at most ${maxReceiptBytes} bytes`, `${bytes.length} bytes`);
    const hash = this.crypto.sha256Hex(bytes);
    if (hash !== receiptHash) context.fail('receipt.hash', hash, receiptHash);
    const node = this.nodes.get(nodeId);
    if (node === undefined) context.fail('receipt.node_key', `an enrolled node ${nodeId}`, 'no NodeEnrolled');
    else if (node.publicKey !== nodeKey) context.fail('receipt.node_key', `the enrolled key ${node.publicKey}`, nodeKey);
    const keyId = keyIdOf(this.crypto.sha256Hex, nodeKey);
    if (keyId !== fields.nodeKeyId) context.fail('receipt.node_key', keyId, fields.nodeKeyId);
    // The enrolled key is the one that counts: a receipt signed by any other key fails here too.
    const publicKey = node?.publicKey ?? nodeKey;
    this.signatures.submit({ position: context.position, check: 'receipt.signature', publicKey, message: bytes, signature: fields.signature, detail: `receipt ${receiptHash}` });
    return { bytes, node };
  }

  /** The receipt must say what the ledger's own events say about its job: checkReceipt's terms. */
  private checkTerms(context: EventContext, receipt: Record<string, unknown>, job: JobAudit | undefined, nodeId: string): void {
    const usage = isRecord(receipt['usage']) ? receipt['usage'] : {};
    const pricing = isRecord(receipt['pricing']) ? receipt['pricing'] : {};
    const terms: Array<[string, unknown, unknown]> = [
      ['version', receipt['version'], receiptVersion],
      ['job_id', receipt['job_id'], context.data['job_id']],
      ['node_id', receipt['node_id'], nodeId],
    ];
    if (job !== undefined) {
      const capture = job.capture;
      terms.push(
        ['model_id', receipt['model_id'], job.modelId],
        ['policy_version', receipt['policy_version'], job.policyVersion],
        ['pricing.prompt_price_per_million_wei', pricing['prompt_price_per_million_wei'], job.pricing['prompt_price_per_million_wei']],
        ['pricing.completion_price_per_million_wei', pricing['completion_price_per_million_wei'], job.pricing['completion_price_per_million_wei']],
        ['quoted_price_wei', receipt['quoted_price_wei'], job.quotedWei],
        ['usage.prompt_tokens', usage['prompt_tokens'], job.usage?.['prompt_tokens']],
        ['usage.completion_tokens', usage['completion_tokens'], job.usage?.['completion_tokens']],
        ['usage.total_tokens', usage['total_tokens'], job.usage?.['total_tokens']],
        ['reserved_price_wei', receipt['reserved_price_wei'], capture === null ? 'a capture of the job' : String(capture.reservedWei)],
        ['debited_price_wei', receipt['debited_price_wei'], capture === null ? 'a capture of the job' : String(capture.costWei)],
        ['payout_price_wei', receipt['payout_price_wei'], capture === null ? 'a capture of the job' : String(capture.nodePayableWei)],
        ['capture node_id', capture?.nodeId, nodeId],
        ['debited_price_wei = min(cost of usage, reserved)', receipt['debited_price_wei'], expectedDebit(usage, pricing, receipt['reserved_price_wei'])],
      );
    }
    for (const [term, found, expected] of terms) {
      if (found !== expected) return context.fail('receipt.terms', `${term} ${show(expected)}`, show(found));
    }
  }

  private countersignature(context: EventContext, fields: Acceptance & { receipt: Record<string, unknown> }): void {
    const ledger = this.ledgerKey();
    if (ledger === null) return context.fail('receipt.countersignature', 'a ledger key to check countersignatures with', 'none given');
    if (fields.ledgerKeyId !== ledger.keyId) return context.fail('receipt.countersignature', `ledger key ${ledger.keyId}`, fields.ledgerKeyId);
    const { receipt, receiptHash } = fields;
    const document = acceptanceBytes(receiptHash, fields.jobId, fields.nodeId, receipt['debited_price_wei'] as string, receipt['payout_price_wei'] as string);
    const check = { position: context.position, check: 'receipt.countersignature', publicKey: ledger.publicKey, detail: `acceptance of receipt ${receiptHash}` };
    this.signatures.submit({ ...check, message: utf8Encoder.encode(document), signature: fields.countersignature });
  }

  private payoutAccrued(context: EventContext): void {
    const found = this.job(context);
    if (found === settled) context.fail('payout.duplicate', 'one payout per receipt', 'a payout for a job already paid or ended');
    const job = found === settled ? undefined : found;
    const nodeId = readText(context, 'node_id');
    const receiptHash = readHash(context, 'receipt_hash');
    const amountWei = readWei(context, 'amount_wei');
    if (nodeId === undefined || receiptHash === undefined || amountWei === undefined) return;
    const jobId = context.data['job_id'] as string;
    // The row exists because the event does; whether it is right is checked below and in batches.
    const row = { payoutId: `pay_${receiptHash}`, receiptHash, jobId, nodeId, amountWei, position: context.position, recordedAt: context.recordedAt };
    this.listener.accrued(row);
    if (job === undefined) return;
    const receipt = job.receipt;
    if (receipt === null) return context.fail('payout.receipt', 'an accepted receipt before the payout', 'none');
    if (job.accrued) return context.fail('payout.duplicate', 'one payout per receipt', 'a second PayoutAccrued');
    job.accrued = true;
    if (receipt.hash !== receiptHash) context.fail('payout.receipt', receipt.hash, receiptHash);
    if (receipt.nodeId !== nodeId) context.fail('payout.node', receipt.nodeId, nodeId);
    if (receipt.payoutWei !== amountWei) context.fail('payout.amount', show(receipt.payoutWei), show(amountWei));
    const node = this.nodes.get(nodeId);
    if (node !== undefined) node.accruedWei += amountWei;
    if (job.billing === 'captured') this.jobs.set(jobId, settled);
  }
}

interface Acceptance {
  jobId: string;
  nodeId: string;
  receiptHash: string;
  text: string;
  signature: string;
  nodeKeyId: string;
  nodeKey: string;
  ledgerKeyId: string;
  countersignature: string;
}

/** The fields of a ReceiptAccepted, or undefined after reporting the first unreadable one. */
function readAcceptance(context: EventContext): Acceptance | undefined {
  const signatureForm = 'base64url of a 64-byte signature';
  const fields = {
    jobId: readText(context, 'job_id'),
    nodeId: readText(context, 'node_id'),
    receiptHash: readHash(context, 'receipt_hash'),
    text: readText(context, 'receipt_canonical'),
    signature: readPattern(context, 'signature_ed25519', signaturePattern, signatureForm),
    nodeKeyId: readPattern(context, 'node_key_id', keyIdPattern, 'ed25519:<16 hex>'),
    nodeKey: readPattern(context, 'node_public_key', publicKeyPattern, 'base64url of a 32-byte key'),
    ledgerKeyId: readPattern(context, 'ledger_key_id', keyIdPattern, 'ed25519:<16 hex>'),
    countersignature: readPattern(context, 'ledger_countersignature', signaturePattern, signatureForm),
  };
  return Object.values(fields).every((value) => value !== undefined) ? (fields as Acceptance) : undefined;
}
