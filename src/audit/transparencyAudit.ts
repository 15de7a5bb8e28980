import { noteKeyHash, parseCheckpoint, verifyCheckpointWith, MalformedNoteError } from '../transparency/portableCheckpoint.ts';
import type { AuditCrypto } from './auditCrypto.ts';
import { AuditTree, HashLevel } from './auditTree.ts';
import { bytesToHex, decodeBase64url, hexToBytes, keyIdPattern, utf8Encoder } from './encoding.ts';
import { readCount, readHash, readPattern, readText, show, type EventContext } from './findings.ts';
import type { AcceptedReceipt } from './receiptAudit.ts';

/**
 * The transparency checks (issue 4): the leaves of stream `transparency-log` are the accepted
 * receipts in acceptance order — leaf k is the k-th ReceiptAccepted of the log, with its hash, job,
 * position and RFC 9162 leaf hash of its exact bytes — and every CheckpointPublished is a signed
 * note by the ledger's key over the root that the audit recomputes from those leaves. Each root is
 * recomputed from the one sequence of leaves, so two checkpoints whose roots both match are
 * consistent with each other; a checkpoint must also not shrink the tree or change the origin.
 */

export const transparencyStream = 'transparency-log';

/** What a row of the transparency projection should hold for one leaf, as the audit recomputed it. */
export interface ExpectedLeaf {
  receiptHash: string;
  leafHash: string;
  acceptedPosition: number;
  /** The position of the ReceiptLogged event. */
  position: number;
}

/** What a row of the transparency projection should hold for one checkpoint. */
export interface ExpectedCheckpoint {
  treeSize: number;
  /** The root the audit recomputed from the leaves, or the event's when its size is past them. */
  rootHash: string;
  /** SHA-256 of the note's UTF-8 bytes: notes are compared by digest, so none is held in memory. */
  noteSha256: string;
  position: number;
}

/** The leaves and checkpoints in log order, for src/audit/transparencyCompare.ts. */
export interface TransparencyRecord {
  loggedLeaf(index: number): ExpectedLeaf;
  publishedCheckpoint(index: number): ExpectedCheckpoint;
}

export class TransparencyAudit implements TransparencyRecord {
  readonly tree: AuditTree;
  /** Accepted receipts not logged yet: the sequencer appends leaves some time after acceptance. */
  private pending: AcceptedReceipt[] = [];
  private pendingStart = 0;
  private previous: { treeSize: number; origin: string; position: number } | null = null;
  /** Per leaf, beside its hash in the tree: 48 bytes a leaf, in chunks like the tree's. */
  private readonly receiptHashes = new HashLevel();
  private readonly acceptedPositions: number[] = [];
  private readonly leafPositions: number[] = [];
  private readonly published: ExpectedCheckpoint[] = [];

  constructor(
    private readonly crypto: AuditCrypto,
    private readonly ledgerKey: () => { publicKey: string; keyId: string } | null,
  ) {
    this.tree = new AuditTree(crypto.nodeHash, hexToBytes(crypto.sha256Hex(new Uint8Array(0))));
  }

  get checkpoints(): number {
    return this.published.length;
  }

  loggedLeaf(index: number): ExpectedLeaf {
    return {
      receiptHash: bytesToHex(this.receiptHashes.at(index)),
      leafHash: bytesToHex(this.tree.leaf(index)),
      acceptedPosition: this.acceptedPositions[index]!,
      position: this.leafPositions[index]!,
    };
  }

  publishedCheckpoint(index: number): ExpectedCheckpoint {
    const checkpoint = this.published[index];
    if (checkpoint === undefined) throw new Error(`Invariant violated: no checkpoint number ${index} in the log`);
    return checkpoint;
  }

  get unlogged(): number {
    return this.pending.length - this.pendingStart;
  }

  get lastCheckpoint(): { treeSize: number; position: number } | null {
    return this.previous;
  }

  accepted(receipt: AcceptedReceipt): void {
    this.pending.push(receipt);
  }

  apply(context: EventContext): void {
    if (context.type !== 'ReceiptLogged' && context.type !== 'CheckpointPublished') return;
    if (context.streamName !== transparencyStream) context.fail('event.stream', transparencyStream, context.streamName);
    if (context.type === 'ReceiptLogged') this.leaf(context);
    else this.checkpoint(context);
  }

  private leaf(context: EventContext): void {
    const leafIndex = readCount(context, 'leaf_index');
    const receiptHash = readHash(context, 'receipt_hash');
    const jobId = readText(context, 'job_id');
    const acceptedPosition = readPattern(context, 'accepted_position', /^[1-9][0-9]{0,18}$/, 'a decimal position');
    const leafHash = readHash(context, 'leaf_hash');
    if (leafIndex === undefined || receiptHash === undefined || jobId === undefined || acceptedPosition === undefined || leafHash === undefined) return;
    if (leafIndex !== this.tree.size) context.fail('transparency.leaf', `leaf_index ${this.tree.size}`, String(leafIndex));
    const expected = this.pending[this.pendingStart];
    if (expected === undefined) {
      context.fail('transparency.leaf', 'an accepted receipt not yet logged', `a leaf for ${receiptHash} with none waiting`);
      this.log(receiptHash, hexToBytes(leafHash), Number(acceptedPosition), context.position);
      return;
    }
    this.pendingStart += 1;
    if (this.pendingStart > 4_096 && this.pendingStart * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.pendingStart);
      this.pendingStart = 0;
    }
    const expectedLeaf = bytesToHex(expected.leafHash);
    const terms: Array<[string, string, string]> = [
      ['receipt_hash', expected.receiptHash, receiptHash],
      ['job_id', expected.jobId, jobId],
      ['accepted_position', String(expected.position), acceptedPosition],
      ['leaf_hash', expectedLeaf, leafHash],
    ];
    const wrong = terms.find(([, want, found]) => want !== found);
    if (wrong !== undefined) context.fail('transparency.leaf', `${wrong[0]} ${wrong[1]} (leaf ${this.tree.size}, receipt at ${expected.position})`, wrong[2]);
    // The tree grows by what the leaf should be: the receipt's own bytes decide the roots.
    this.log(expected.receiptHash, expected.leafHash, expected.position, context.position);
  }

  private log(receiptHash: string, leafHash: Uint8Array, acceptedPosition: number, position: number): void {
    this.tree.append(leafHash);
    this.receiptHashes.push(hexToBytes(receiptHash));
    this.acceptedPositions.push(acceptedPosition);
    this.leafPositions.push(position);
  }

  private checkpoint(context: EventContext): void {
    const treeSize = readCount(context, 'tree_size');
    const rootHash = readHash(context, 'root_hash');
    const keyName = readText(context, 'key_name');
    const keyId = readPattern(context, 'key_id', keyIdPattern, 'ed25519:<16 hex>');
    const note = readText(context, 'note');
    if (treeSize === undefined || rootHash === undefined || keyName === undefined || keyId === undefined || note === undefined) return;
    const root = treeSize <= this.tree.size ? bytesToHex(this.tree.root(treeSize)) : null;
    const noteSha256 = this.crypto.sha256Hex(utf8Encoder.encode(note));
    this.published.push({ treeSize, rootHash: root ?? rootHash, noteSha256, position: context.position });
    const ledger = this.ledgerKey();
    if (ledger === null) return context.fail('checkpoint.signature', 'a ledger key to check checkpoints with', 'none given');
    if (keyId !== ledger.keyId) context.fail('checkpoint.key', `ledger key ${ledger.keyId}`, keyId);
    const origin = this.verifyNote(context, note, keyName, ledger.publicKey, treeSize, rootHash);
    if (root === null) {
      context.fail('checkpoint.size', `a tree size of at most the ${this.tree.size} leaves logged before it`, String(treeSize));
    } else if (root !== rootHash) {
      context.fail('checkpoint.root', `root ${root} of the first ${treeSize} leaves`, rootHash);
    }
    const previous = this.previous;
    if (previous !== null && treeSize < previous.treeSize) {
      context.fail('checkpoint.consistency', `a tree size of at least ${previous.treeSize} (checkpoint at ${previous.position})`, String(treeSize));
    }
    if (previous !== null && origin !== null && origin !== previous.origin) context.fail('checkpoint.origin', previous.origin, origin);
    this.previous = { treeSize: Math.max(treeSize, previous?.treeSize ?? 0), origin: origin ?? previous?.origin ?? '', position: context.position };
  }

  /** Checks the note's signature and that it says what the event says; returns its origin. */
  private verifyNote(context: EventContext, note: string, keyName: string, publicKey: string, treeSize: number, rootHash: string): string | null {
    const key = decodeBase64url(publicKey);
    let keyHash: number;
    try {
      keyHash = noteKeyHash(keyName, key);
    } catch {
      context.fail('checkpoint.signature', 'a valid signed-note key name', show(keyName));
      return null;
    }
    const verdict = verifyCheckpointWith(this.crypto.verifyEd25519, note, { keyName, keyHash, publicKey: key });
    if (!verdict.ok) {
      context.fail('checkpoint.signature', `a note signed by ${keyName} with the ledger key`, `${verdict.reason}: ${verdict.detail}`);
      return readableOrigin(note);
    }
    const checkpoint = verdict.checkpoint;
    if (checkpoint.treeSize !== BigInt(treeSize)) context.fail('checkpoint.note', `tree size ${treeSize} in the note`, String(checkpoint.treeSize));
    const noteRoot = bytesToHex(checkpoint.rootHash);
    if (noteRoot !== rootHash) context.fail('checkpoint.note', `root ${rootHash} in the note`, noteRoot);
    return checkpoint.origin;
  }
}

function readableOrigin(note: string): string | null {
  try {
    return parseCheckpoint(note).origin;
  } catch (error) {
    if (error instanceof MalformedNoteError) return null;
    throw error;
  }
}
