import type { NodeIdentity } from '../receipts/ed25519.ts';

/** How the transparency log names itself and how often it publishes a checkpoint. */
export interface TransparencySettings {
  /** The log's name in its checkpoints, and the name of the key that signs them (C2SP: no spaces, no "+"). */
  origin: string;
  /** A checkpoint is due once this many leaves are not in one yet… */
  checkpointEveryLeaves: number;
  /** …or once the oldest such leaf has waited this long. */
  checkpointEveryMs: number;
}

/** The origin names the log by its signing key, so it is stable for as long as the key is. */
export function defaultOrigin(identity: NodeIdentity): string {
  return `b3iq.ledger/${identity.keyId.replace(/^ed25519:/, '')}`;
}

export function defaultTransparencySettings(identity: NodeIdentity): TransparencySettings {
  return { origin: defaultOrigin(identity), checkpointEveryLeaves: 1_000, checkpointEveryMs: 10_000 };
}
