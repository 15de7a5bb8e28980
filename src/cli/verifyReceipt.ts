import * as ed from '@noble/ed25519';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, hexToBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import canonicalize from 'canonicalize';
import { readFile } from 'node:fs/promises';
import { verifySignedReceiptPortable } from '../receipts/portableVerify.ts';
import { MalformedNoteError, parseCheckpoint, parseVerifierKey, verifyCheckpointPortable, type SignedCheckpoint, type VerifierKey } from '../transparency/portableCheckpoint.ts';
import { leafHashPortable, verifyInclusionPortable } from '../transparency/portableMerkle.ts';
import { parseCommandLine } from './arguments.ts';

/**
 * `b3iq verify-receipt`: checks a receipt offline with public data only, through the portable
 * verifiers (@noble, no node:crypto): its hash and node signature, and optionally the ledger's
 * countersignature, an inclusion proof, and the checkpoint the proof leads to with the ledger's
 * C2SP verifier key. Prints `valid`, or `invalid: <the first check that failed>`.
 */

export const verifyReceiptUsage = `Usage: b3iq verify-receipt [FILE|-] [--proof FILE] [--checkpoint FILE] [--ledger-key KEY] [--node-key KEY]

  FILE               a receipt as GET /v1/receipts/{hash} returns it, or the signed receipt document; - or none reads stdin
  --proof FILE       an inclusion proof as GET /v1/receipts/{hash}/inclusion returns it
  --checkpoint FILE  the signed checkpoint note to check the proof against (default: the one in the proof)
  --ledger-key KEY   the ledger's verifier key <name>+<hash>+<base64> (GET /v1/transparency/public-keys):
                     checks the checkpoint's signature and the ledger's countersignature
  --node-key KEY     the node's base64url Ed25519 key the receipt must be signed with (default: the key it names)

Exit status: 0 valid, 1 invalid, 2 the command could not run.`;

export interface Evidence {
  receipt: string;
  proof?: string;
  checkpoint?: string;
  ledgerKey?: string;
  nodeKey?: string;
}

export type EvidenceVerification = { ok: true; notes: string[] } | { ok: false; reason: string };

type JsonObject = Record<string, unknown>;

const maxInputBytes = 1_048_576;
const hexHash = /^[0-9a-f]{64}$/;
const signaturePattern = /^[A-Za-z0-9_-]{85}[AQgw]$/;
const envelopeFields = ['receipt_canonical', 'receipt_hash', 'signature_ed25519', 'node_key_id', 'node_public_key'] as const;

class Invalid extends Error {}

/** Every check in order; the first failure is the answer. A malformed ledger key throws a TypeError. */
export function verifyEvidence(evidence: Evidence): EvidenceVerification {
  const ledgerKey = evidence.ledgerKey === undefined ? null : parseVerifierKey(evidence.ledgerKey);
  try {
    const notes: string[] = [];
    const document = parseObject(evidence.receipt, 'the receipt');
    const receipt = verifyReceipt(document, evidence.nodeKey);
    if (ledgerKey !== null) notes.push(...verifyCountersignature(document, receipt, ledgerKey));
    if (evidence.proof !== undefined) notes.push(...verifyProof(parseObject(evidence.proof, 'the proof'), receipt, evidence.checkpoint, ledgerKey));
    return { ok: true, notes };
  } catch (error) {
    if (error instanceof Invalid) return { ok: false, reason: error.message };
    throw error;
  }
}

interface VerifiedReceipt {
  canonical: string;
  hash: string;
  body: JsonObject;
}

function verifyReceipt(document: JsonObject, nodeKey: string | undefined): VerifiedReceipt {
  const envelope = Object.fromEntries(envelopeFields.filter((field) => Object.hasOwn(document, field)).map((field) => [field, document[field]]));
  const expectedKey = nodeKey ?? (typeof envelope['node_public_key'] === 'string' ? envelope['node_public_key'] : '');
  const verified = verifySignedReceiptPortable(envelope, expectedKey);
  if (!verified.ok) throw new Invalid(`${verified.code}: ${verified.detail}`);
  const canonical = envelope['receipt_canonical'] as string;
  const body = JSON.parse(canonical) as JsonObject;
  // The lookup repeats parts of the signed receipt for convenience; they must say what it says.
  if (Object.hasOwn(document, 'receipt') && canonicalize(document['receipt']) !== canonical) {
    throw new Invalid('receipt: differs from the signed receipt_canonical');
  }
  for (const field of ['job_id', 'node_id', 'model_id']) {
    if (Object.hasOwn(document, field) && document[field] !== body[field]) throw new Invalid(`${field}: differs from the signed receipt`);
  }
  return { canonical, hash: verified.receiptHash, body };
}

function verifyCountersignature(document: JsonObject, receipt: VerifiedReceipt, ledgerKey: VerifierKey): string[] {
  const signature = document['ledger_countersignature'];
  if (signature === undefined || signature === null) return ['no ledger countersignature in the input; only the node signature was checked'];
  if (typeof signature !== 'string' || !signaturePattern.test(signature)) throw new Invalid('ledger_countersignature: malformed');
  const keyId = `ed25519:${bytesToHex(sha256(ledgerKey.publicKey)).slice(0, 16)}`;
  if (document['ledger_key_id'] !== undefined && document['ledger_key_id'] !== keyId) {
    throw new Invalid(`ledger_key_id: ${String(document['ledger_key_id'])} is not the given ledger key (${keyId})`);
  }
  const acceptance = {
    version: 'b3iq-receipt-acceptance-v1',
    receipt_hash: receipt.hash,
    job_id: receipt.body['job_id'],
    node_id: receipt.body['node_id'],
    debited_price_wei: receipt.body['debited_price_wei'],
    payout_price_wei: receipt.body['payout_price_wei'],
  };
  const message = utf8ToBytes(canonicalize(acceptance) ?? '');
  if (!ed.verify(Buffer.from(signature, 'base64url'), message, ledgerKey.publicKey, { zip215: false })) {
    throw new Invalid('ledger_countersignature: does not verify with the ledger key');
  }
  return [];
}

interface Proof {
  leafIndex: number;
  treeSize: number;
  auditPath: Uint8Array[];
}

function verifyProof(document: JsonObject, receipt: VerifiedReceipt, checkpointText: string | undefined, ledgerKey: VerifierKey | null): string[] {
  const proof = readProof(document);
  if (document['receipt_hash'] !== undefined && document['receipt_hash'] !== receipt.hash) throw new Invalid('proof: is for another receipt');
  const leaf = leafHashPortable(utf8ToBytes(receipt.canonical));
  if (document['leaf_hash'] !== undefined && document['leaf_hash'] !== bytesToHex(leaf)) {
    throw new Invalid('proof: leaf_hash is not the RFC 9162 leaf hash of this receipt');
  }
  const note = checkpointText ?? document['checkpoint'];
  if (typeof note !== 'string') throw new Invalid('proof: no checkpoint to check it against (pass --checkpoint or a proof that includes one)');
  const { checkpoint, notes } = readCheckpoint(note, ledgerKey);
  if (checkpoint.treeSize !== BigInt(proof.treeSize)) {
    throw new Invalid(`checkpoint: is for tree size ${checkpoint.treeSize}, the proof for ${proof.treeSize}`);
  }
  if (document['root_hash'] !== undefined && document['root_hash'] !== bytesToHex(checkpoint.rootHash)) {
    throw new Invalid("proof: root_hash is not the checkpoint's root");
  }
  if (!verifyInclusionPortable(leaf, proof.leafIndex, proof.treeSize, proof.auditPath, checkpoint.rootHash)) {
    throw new Invalid(`proof: the audit path for leaf ${proof.leafIndex} does not lead to the checkpoint's root`);
  }
  return notes;
}

function readProof(document: JsonObject): Proof {
  const { leaf_index: leafIndex, tree_size: treeSize, audit_path: auditPath } = document;
  if (!Number.isSafeInteger(leafIndex) || (leafIndex as number) < 0) throw new Invalid('proof: leaf_index must be a non-negative integer');
  if (!Number.isSafeInteger(treeSize) || (treeSize as number) < 1) throw new Invalid('proof: tree_size must be a positive integer');
  if (!Array.isArray(auditPath) || !auditPath.every((node) => typeof node === 'string' && hexHash.test(node))) {
    throw new Invalid('proof: audit_path must be a list of 64 lowercase hex characters each');
  }
  return { leafIndex: leafIndex as number, treeSize: treeSize as number, auditPath: auditPath.map((node: string) => hexToBytes(node)) };
}

function readCheckpoint(note: string, ledgerKey: VerifierKey | null): { checkpoint: SignedCheckpoint; notes: string[] } {
  if (ledgerKey === null) {
    try {
      return { checkpoint: parseCheckpoint(note), notes: ["the checkpoint's signature was not checked: pass --ledger-key"] };
    } catch (error) {
      if (error instanceof MalformedNoteError) throw new Invalid(`checkpoint: ${error.message}`);
      throw error;
    }
  }
  const verified = verifyCheckpointPortable(note, ledgerKey);
  if (!verified.ok) throw new Invalid(`checkpoint: ${verified.detail}`);
  // The ledger names its log by the key's name: a checkpoint of another log by the same key is not this log's.
  if (verified.checkpoint.origin !== ledgerKey.keyName) throw new Invalid(`checkpoint: is for the log ${verified.checkpoint.origin}, not ${ledgerKey.keyName}`);
  return { checkpoint: verified.checkpoint, notes: [] };
}

function parseObject(text: string, what: string): JsonObject {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Invalid(`${what} is not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Invalid(`${what} is not a JSON object`);
  return value as JsonObject;
}

export interface CliIo {
  readStdin(): Promise<string>;
  stdout(text: string): void;
  stderr(text: string): void;
}

const processIo: CliIo = {
  readStdin: () => readStream(process.stdin),
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

export async function runVerifyReceiptCli(argv: string[], io: CliIo = processIo): Promise<number> {
  let evidence: Evidence;
  try {
    const { values, positionals } = parseCommandLine({
      args: argv,
      allowPositionals: true,
      options: {
        proof: { type: 'string' },
        checkpoint: { type: 'string' },
        'ledger-key': { type: 'string' },
        'node-key': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      io.stdout(`${verifyReceiptUsage}\n`);
      return 0;
    }
    if (positionals.length > 1) throw new TypeError('Give at most one receipt file');
    if (values.checkpoint !== undefined && values.proof === undefined) throw new TypeError('--checkpoint needs --proof');
    const file = positionals[0] ?? '-';
    evidence = {
      receipt: file === '-' ? await io.readStdin() : await readInput(file),
      ...(values.proof === undefined ? {} : { proof: await readInput(values.proof) }),
      ...(values.checkpoint === undefined ? {} : { checkpoint: await readInput(values.checkpoint) }),
      ...(values['ledger-key'] === undefined ? {} : { ledgerKey: values['ledger-key'] }),
      ...(values['node-key'] === undefined ? {} : { nodeKey: values['node-key'] }),
    };
    if (evidence.ledgerKey !== undefined) parseVerifierKey(evidence.ledgerKey);
  } catch (error) {
    io.stderr(`b3iq verify-receipt: ${(error as Error).message}\n\n${verifyReceiptUsage}\n`);
    return 2;
  }
  const result = verifyEvidence(evidence);
  if (!result.ok) {
    io.stdout(`invalid: ${result.reason}\n`);
    return 1;
  }
  for (const note of result.notes) io.stderr(`note: ${note}\n`);
  io.stdout('valid\n');
  return 0;
}

async function readInput(path: string): Promise<string> {
  const bytes = await readFile(path);
  if (bytes.length > maxInputBytes) throw new RangeError(`${path} is larger than ${maxInputBytes} bytes`);
  return bytes.toString('utf8');
}

async function readStream(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of stream) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    length += bytes.length;
    if (length > maxInputBytes) throw new RangeError(`stdin is larger than ${maxInputBytes} bytes`);
    chunks.push(bytes);
  }
  return Buffer.concat(chunks).toString('utf8');
}
