import type { AuditCrypto, SignatureCheck, SignatureQueue } from './auditCrypto.ts';
import { counterPattern, keyIdOf, publicKeyPattern, utf8Decoder } from './encoding.ts';
import { headerProblem, readExportLine, trailerProblem } from './exportFormat.ts';
import { Findings, isRecord, show, type EventContext, type Finding } from './findings.ts';
import { MoneyAudit } from './moneyAudit.ts';
import { PayoutAudit } from './payoutAudit.ts';
import { ReceiptAudit } from './receiptAudit.ts';
import { TransparencyAudit, type TransparencyRecord } from './transparencyAudit.ts';
import { summarise, type AuditSummary, type StateSnapshot } from './summary.ts';

/**
 * The offline audit: one pass over the log in order, holding per-account, per-stream and per-job
 * state and the Merkle tree, never the log itself. Feed it an export file line by line (`line`) or
 * events from a database (`ledgerKey`, then `event`), await `ready()` now and then so signature
 * checks cannot pile up, and `finish()` at the end. Every check reports a finding and the pass
 * goes on, so one run lists everything wrong; the first finding by position is the headline.
 *
 * Portable: no node:*, no Buffer; the primitives come in as an AuditCrypto.
 */

export interface LedgerAuditOptions {
  crypto: AuditCrypto;
  /** A ledger key the auditor already trusts (base64url); the export's header must name the same. */
  trustedLedgerKey?: string | null;
  /** Positions at which to keep a copy of the recomputed state, to compare with projections. */
  snapshotPositions?: readonly number[];
}

export interface AuditReport {
  ok: boolean;
  summary: AuditSummary;
  /** The earliest findings, header first, then by position; `findingCount` counts all of them. */
  findings: Finding[];
  findingCount: number;
  snapshots: Map<number, StateSnapshot>;
}

const eventKeys = ['data', 'event_id', 'metadata', 'position', 'recorded_at', 'stream_name', 'stream_version', 'type'];
const genesisHash = '0'.repeat(64);

export class LedgerAudit {
  readonly findings = new Findings();
  private readonly crypto: AuditCrypto;
  private readonly signatures: SignatureQueue;
  private readonly money: MoneyAudit;
  private readonly receipts: ReceiptAudit;
  private readonly transparency: TransparencyAudit;
  private readonly payouts: PayoutAudit;
  private ledger: { publicKey: string; keyId: string } | null = null;
  private header: Record<string, unknown> | null = null;
  private trailer: Record<string, unknown> | null = null;
  private lastPosition = 0;
  private lastHash = genesisHash;
  private eventCount = 0;
  private readonly streamVersions = new Map<string, number>();
  private readonly types = new Map<string, number>();
  private readonly snapshotPositions: Set<number>;
  private readonly snapshots = new Map<number, StateSnapshot>();

  constructor(private readonly options: LedgerAuditOptions) {
    this.crypto = options.crypto;
    this.signatures = options.crypto.signatureQueue((check, valid) => this.verdict(check, valid));
    this.payouts = new PayoutAudit(this.crypto);
    this.receipts = new ReceiptAudit(this.crypto, this.signatures, () => this.ledger, {
      accepted: (receipt) => this.transparency.accepted(receipt),
      accrued: (row) => this.payouts.accrued(row),
    });
    this.money = new MoneyAudit(this.receipts);
    this.transparency = new TransparencyAudit(this.crypto, () => this.ledger);
    this.snapshotPositions = new Set(options.snapshotPositions ?? []);
    if (this.snapshotPositions.has(0)) this.snapshots.set(0, this.snapshot());
    // A trusted key holds even when the header is missing or unreadable.
    if (options.trustedLedgerKey !== undefined && options.trustedLedgerKey !== null) this.ledgerKey(options.trustedLedgerKey);
  }

  /** For a database audit, which has no header: the ledger key comes from the auditor. */
  ledgerKey(publicKey: string): void {
    if (!publicKeyPattern.test(publicKey)) throw new TypeError('The ledger key must be base64url of a 32-byte Ed25519 public key');
    this.ledger = { publicKey, keyId: keyIdOf(this.crypto.sha256Hex, publicKey) };
  }

  /** One line of an export file, without its newline. */
  line(bytes: Uint8Array): void {
    const line = readExportLine(bytes);
    const afterTrailer = this.trailer !== null;
    if (afterTrailer) this.fileFinding('trailer', 'format.trailer', 'nothing after the trailer', line.kind);
    if (line.kind === 'malformed') return this.fileFinding(this.header === null ? 'header' : 'event', 'format.line', 'a header, event or trailer line', line.reason);
    if (line.kind === 'header') return this.readHeader(line.header);
    if (this.header === null && this.eventCount === 0 && !afterTrailer) this.fileFinding('header', 'format.header', 'a header line first', line.kind);
    if (line.kind === 'trailer') this.trailer = line.trailer;
    else if (!afterTrailer) this.event(line.hash, line.bytes);
  }

  /** One event: its stored hash and the exact bytes the chain covers. */
  event(hash: string, bytes: Uint8Array): void {
    this.eventCount += 1;
    const expectedPosition = this.lastPosition + 1;
    const computed = this.crypto.chainHash(this.lastHash, bytes);
    const event = parseEvent(bytes);
    const position = typeof event === 'string' ? expectedPosition : Number(event.position);
    // A missing or misplaced event is named by the position that was due.
    if (position !== expectedPosition) this.findings.at(expectedPosition, 'chain.position', `position ${expectedPosition}`, `position ${position}`);
    if (computed !== hash) this.findings.at(position, 'chain.hash', `sha256(previous hash ‖ event bytes) = ${computed}`, hash);
    this.lastPosition = position;
    this.lastHash = hash;
    if (typeof event === 'string') this.findings.at(position, 'event.format', 'the chained fields of an event', event);
    else this.apply(position, event);
    if (this.snapshotPositions.has(position)) this.snapshots.set(position, this.snapshot());
  }

  /** The recomputed state after `position`, if it was asked for in `snapshotPositions`. */
  snapshotAt(position: number): StateSnapshot | undefined {
    return this.snapshots.get(position);
  }

  /** Every leaf and checkpoint as recomputed so far; a snapshot says how many of each it covers. */
  get transparencyLog(): TransparencyRecord {
    return this.transparency;
  }

  /** Resolves once the signature queue has room; call it between chunks of input. */
  ready(): Promise<void> {
    return this.signatures.ready();
  }

  async finish(): Promise<AuditReport> {
    await this.signatures.drain();
    if (this.header !== null) this.checkTrailer();
    const summary = summarise({
      events: this.eventCount,
      headPosition: this.lastPosition,
      headHash: this.lastHash,
      types: this.types,
      money: this.money,
      receipts: this.receipts,
      transparency: this.transparency,
      payouts: this.payouts,
      ledgerKeyId: this.ledger?.keyId ?? null,
      crypto: this.crypto.name,
    });
    if (summary.accountsSumWei !== 0n) {
      this.findings.add({ where: 'trailer', position: null, check: 'money.sum', expected: 'all accounts sum to 0', found: show(summary.accountsSumWei) });
    }
    return { ok: this.findings.count === 0, summary, findings: this.findings.sorted(), findingCount: this.findings.count, snapshots: this.snapshots };
  }

  private apply(position: number, event: ParsedEvent): void {
    this.types.set(event.type, (this.types.get(event.type) ?? 0) + 1);
    const version = Number(event.stream_version);
    const expectedVersion = (this.streamVersions.get(event.stream_name) ?? 0) + 1;
    if (version !== expectedVersion) this.findings.at(position, 'stream.version', `${event.stream_name} version ${expectedVersion}`, String(version));
    this.streamVersions.set(event.stream_name, version);
    const context: EventContext = {
      position,
      streamName: event.stream_name,
      type: event.type,
      recordedAt: event.recorded_at,
      data: event.data,
      fail: (check, expected, found) => this.findings.at(position, check, expected, found),
    };
    this.money.apply(context);
    this.receipts.apply(context);
    this.transparency.apply(context);
    this.payouts.apply(context);
  }

  private verdict(check: SignatureCheck, valid: boolean): void {
    if (!valid) this.findings.at(check.position, check.check, `a valid Ed25519 signature by ${check.publicKey} (${check.detail})`, 'invalid');
  }

  private readHeader(header: Record<string, unknown>): void {
    if (this.header !== null || this.eventCount > 0) return this.fileFinding('header', 'format.header', 'one header, first', 'another header');
    this.header = header;
    const problem = headerProblem(header);
    if (problem !== null) return this.fileFinding('header', 'format.header', 'a well-formed header', problem);
    const publicKey = header['ledger_public_key'] as string;
    const keyId = keyIdOf(this.crypto.sha256Hex, publicKey);
    if (keyId !== header['ledger_key_id']) this.fileFinding('header', 'header.ledger_key', keyId, String(header['ledger_key_id']));
    const trusted = this.options.trustedLedgerKey;
    if (trusted !== undefined && trusted !== null && trusted !== publicKey) {
      this.fileFinding('header', 'header.ledger_key', `the trusted ledger key ${trusted}`, publicKey);
      this.ledgerKey(trusted);
      return;
    }
    this.ledgerKey(publicKey);
  }

  /** The trailer must close the file and agree with what was read: nothing lost at the end. */
  private checkTrailer(): void {
    const trailer = this.trailer;
    if (trailer === null) return this.fileFinding('trailer', 'format.trailer', 'a trailer line at the end', 'none (the file is truncated)');
    const problem = trailerProblem(trailer);
    if (problem !== null) return this.fileFinding('trailer', 'format.trailer', 'a well-formed trailer', problem);
    const pairs: Array<[string, string, string]> = [
      ['event_count', String(this.eventCount), trailer['event_count'] as string],
      ['head_position', String(this.lastPosition), trailer['head_position'] as string],
      ['head_hash', this.lastHash, trailer['head_hash'] as string],
      ['header head_position', String(this.lastPosition), String(this.header?.['head_position'])],
    ];
    for (const [name, read, claimed] of pairs) {
      if (read !== claimed) this.fileFinding('trailer', 'format.trailer', `${name} ${claimed} as claimed`, `${read} read`);
    }
  }

  private fileFinding(where: 'header' | 'event' | 'trailer', check: string, expected: string, found: string): void {
    this.findings.add({ where, position: where === 'event' ? this.lastPosition + 1 : null, check, expected, found });
  }

  private snapshot(): StateSnapshot {
    return {
      accounts: new Map(this.money.accounts),
      customers: [...this.money.customers.keys()],
      jobTotals: structuredClone(this.receipts.jobTotals),
      nodes: new Map([...this.receipts.nodes].map(([nodeId, totals]) => [nodeId, { ...totals }])),
      receipts: this.receipts.receipts,
      transparency: { leaves: this.transparency.tree.size, checkpoints: this.transparency.checkpoints },
    };
  }
}

type ParsedEvent = { position: string; stream_name: string; stream_version: string; type: string; recorded_at: string; data: Record<string, unknown> };

/** The event's chained fields, or why the bytes are not an event. */
function parseEvent(bytes: Uint8Array): ParsedEvent | string {
  let value: unknown;
  try {
    value = JSON.parse(utf8Decoder.decode(bytes));
  } catch {
    return 'the event bytes are not UTF-8 JSON';
  }
  if (!isRecord(value)) return 'the event is not a JSON object';
  const keys = Object.keys(value);
  if (keys.length !== eventKeys.length || !eventKeys.every((key) => Object.hasOwn(value, key))) return `the event has fields ${keys.join(', ')}`;
  const { position, stream_name: stream, stream_version: version, type, data, metadata, event_id: eventId, recorded_at: at } = value;
  if (typeof position !== 'string' || !counterPattern.test(position)) return `position ${show(position)} is not a decimal position`;
  if (typeof version !== 'string' || !counterPattern.test(version)) return `stream_version ${show(version)} is not a decimal version`;
  if (typeof stream !== 'string' || typeof type !== 'string' || typeof eventId !== 'string' || typeof at !== 'string') {
    return 'stream_name, type, event_id and recorded_at must be strings';
  }
  if (!isRecord(data) || !isRecord(metadata)) return 'data and metadata must be objects';
  return { position, stream_name: stream, stream_version: version, type, recorded_at: at, data };
}

