import { canonicalBytes } from '../canonicalJson.ts';
import { verifySignature, type NodeIdentity } from './ed25519.ts';

/**
 * The ledger's countersignature on an accepted receipt: it binds the receipt hash to the job and to
 * what the ledger charged and owes for it, so an auditor can tell a receipt the ledger accepted
 * from one it never saw.
 */
export interface Acceptance {
  version: 'b3iq-receipt-acceptance-v1';
  receipt_hash: string;
  job_id: string;
  node_id: string;
  debited_price_wei: string;
  payout_price_wei: string;
}

export function acceptance(fields: Omit<Acceptance, 'version'>): Acceptance {
  return { version: 'b3iq-receipt-acceptance-v1', ...fields };
}

export function countersign(identity: NodeIdentity, document: Acceptance): string {
  return identity.sign(canonicalBytes(document));
}

export function verifyCountersignature(publicKey: string, document: Acceptance, signature: string): boolean {
  try {
    return verifySignature(publicKey, canonicalBytes(document), signature);
  } catch {
    return false;
  }
}
