import { invariant } from '../errors.ts';
import { parseTransparencyEvent, transparencyStreamName, type TransparencyEvent } from '../events/transparency.ts';
import type { StoredEvent } from '../eventStore/port.ts';
import { hashLength, MerkleTree } from './merkle.ts';

/**
 * What the transparency-log stream says so far, folded: the Merkle tree of its leaves, the stream
 * version it includes, the global position of the last receipt it logged and the size of its latest
 * checkpoint. The sequencer appends with this version as the expected one, and the proof endpoints
 * read the tree.
 *
 * Every change arrives as a stream event in version order. An event at or below the version already
 * folded in is checked against the state (a leaf must have the hash already stored at its index)
 * rather than applied twice: the sequencer re-reads the stream's recent events after a restart.
 */
export class TransparencyLogState {
  readonly tree = new MerkleTree();
  /** The transparency-log stream version this state includes. */
  version = 0n;
  /** Global position of the ReceiptAccepted event of the last leaf; 0 before the first leaf. */
  lastAcceptedPosition = 0n;
  /** Tree size of the latest checkpoint; 0 before the first. */
  checkpointSize = 0;

  apply(stored: StoredEvent): void {
    invariant(stored.streamName === transparencyStreamName, `event ${stored.position} is not in the transparency log`);
    const event = parseTransparencyEvent(stored.type, stored.data);
    invariant(event !== null, `the transparency log holds an event of unknown type ${stored.type}`);
    if (stored.streamVersion <= this.version) {
      this.checkKnown(event);
      return;
    }
    invariant(stored.streamVersion === this.version + 1n, `the transparency log jumps from version ${this.version} to ${stored.streamVersion}`);
    if (event.type === 'ReceiptLogged') {
      this.addLeaf(event.data.leaf_index, event.data.leaf_hash, BigInt(event.data.accepted_position));
    } else {
      this.addCheckpoint(event.data.tree_size, event.data.root_hash);
    }
    this.version = stored.streamVersion;
  }

  /** A leaf as stored, in index order: what loading from the projection and new events both do. */
  addLeaf(leafIndex: number, leafHashHex: string, acceptedPosition: bigint): void {
    invariant(leafIndex === this.tree.size, `leaf ${leafIndex} arrives when the tree has ${this.tree.size} leaves`);
    invariant(acceptedPosition > this.lastAcceptedPosition, `leaf ${leafIndex} logs position ${acceptedPosition}, not after ${this.lastAcceptedPosition}`);
    this.tree.append(Buffer.from(leafHashHex, 'hex'));
    this.lastAcceptedPosition = acceptedPosition;
  }

  /**
   * Consecutive leaves as the projection holds them, hashes concatenated. Only the last accepted
   * position is given: the leaves were checked one by one when their events were folded in.
   */
  addLeaves(firstIndex: number, hashes: Uint8Array, lastAcceptedPosition: bigint): void {
    invariant(firstIndex === this.tree.size, `leaves from ${firstIndex} arrive when the tree has ${this.tree.size} leaves`);
    invariant(hashes.length % hashLength === 0 && hashes.length > 0, 'leaf hashes come in whole 32-byte hashes');
    invariant(lastAcceptedPosition > this.lastAcceptedPosition, `leaves up to position ${lastAcceptedPosition} are not after ${this.lastAcceptedPosition}`);
    for (let offset = 0; offset < hashes.length; offset += hashLength) this.tree.append(hashes.subarray(offset, offset + hashLength));
    this.lastAcceptedPosition = lastAcceptedPosition;
  }

  /** A checkpoint must sign the root this tree has at its size; anything else is a corrupt log. */
  addCheckpoint(treeSize: number, rootHashHex: string): void {
    invariant(treeSize <= this.tree.size, `a checkpoint of size ${treeSize} precedes its leaves (tree size ${this.tree.size})`);
    invariant(hex(this.tree.root(treeSize)) === rootHashHex, `the checkpoint of size ${treeSize} signs another root`);
    if (treeSize > this.checkpointSize) this.checkpointSize = treeSize;
  }

  private checkKnown(event: TransparencyEvent): void {
    if (event.type === 'ReceiptLogged') {
      const index = event.data.leaf_index;
      invariant(index < this.tree.size && hex(this.tree.leafHashAt(index)) === event.data.leaf_hash, `leaf ${index} differs from the one folded in`);
    } else {
      invariant(event.data.tree_size <= this.checkpointSize, `checkpoint ${event.data.tree_size} was not folded in`);
    }
  }
}

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}
