import { canonicalJson } from '../canonicalJson.ts';
import { invariant } from '../errors.ts';
import { leafHash, MerkleTree } from '../transparency/merkle.ts';

/**
 * A payout batch's Merkle tree. A leaf is the RFC 8785 bytes of
 * `{amount_wei, job_id, node_id, payout_id, receipt_hash, version: "b3iq-payout-leaf-v1"}`, hashed
 * as in RFC 9162 (SHA-256(0x00 ‖ bytes), interior SHA-256(0x01 ‖ left ‖ right)), the same tree as the
 * transparency log. Leaves are in ascending order of the PayoutAccrued event's log position. The
 * batch id is not in the leaf, so a preview shows the very root a create would commit to.
 */
export const payoutLeafVersion = 'b3iq-payout-leaf-v1';

/** The largest batch: its row list travels in one event. */
export const maxPayoutsPerBatch = 5_000;

export interface PayoutLeafFields {
  payout_id: string;
  receipt_hash: string;
  job_id: string;
  node_id: string;
  amount_wei: string;
}

export function payoutLeafCanonical(row: PayoutLeafFields): string {
  return canonicalJson({
    amount_wei: row.amount_wei,
    job_id: row.job_id,
    node_id: row.node_id,
    payout_id: row.payout_id,
    receipt_hash: row.receipt_hash,
    version: payoutLeafVersion,
  });
}

export function payoutLeafHash(row: PayoutLeafFields): Uint8Array {
  return leafHash(Buffer.from(payoutLeafCanonical(row), 'utf8'));
}

export function payoutTree(rows: readonly PayoutLeafFields[]): MerkleTree {
  invariant(rows.length <= maxPayoutsPerBatch, `a batch holds at most ${maxPayoutsPerBatch} payouts`);
  const tree = new MerkleTree();
  for (const row of rows) tree.append(payoutLeafHash(row));
  return tree;
}

export function payoutMerkleRoot(rows: readonly PayoutLeafFields[]): string {
  return Buffer.from(payoutTree(rows).root()).toString('hex');
}
