import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { runVerifyReceiptCli, verifyEvidence, type CliIo, type Evidence } from '../../src/cli/verifyReceipt.ts';
import { acceptance, countersign } from '../../src/receipts/acceptance.ts';
import { generateIdentity } from '../../src/receipts/ed25519.ts';
import { signReceipt, type Receipt } from '../../src/receipts/receipt.ts';
import { checkpointSignerFromIdentity, formatVerifierKey, signCheckpoint } from '../../src/transparency/checkpoint.ts';
import { leafHash, MerkleTree } from '../../src/transparency/merkle.ts';

/**
 * `b3iq verify-receipt` on evidence built with the server-side signers: a receipt as the public
 * lookup returns it, the ledger's countersignature, an inclusion proof and a signed checkpoint, all
 * checked by the portable verifiers. Each tampering names the check that caught it.
 */

const node = generateIdentity();
const ledger = generateIdentity();
const origin = 'b3iq.ledger/test';
const ledgerKey = formatVerifierKey(origin, ledger.publicKeyRaw);
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

const receipt: Receipt = {
  version: 'b3iq-receipt-v1',
  job_id: 'job_0123456789abcdef01234567',
  node_id: 'node_0123456789abcdef01234567',
  model_id: 'b3iq-dev-small',
  runtime_kind: 'openai',
  stream: false,
  usage: { prompt_tokens: 20, completion_tokens: 12, total_tokens: 32 },
  pricing: { prompt_price_per_million_wei: '2000000000', completion_price_per_million_wei: '6000000000' },
  quoted_price_wei: '6400000',
  reserved_price_wei: '6400000',
  debited_price_wei: '112000',
  payout_price_wei: '100800',
  policy_version: 'launch-1',
  started_at: '2026-01-02T03:04:05.000Z',
  completed_at: '2026-01-02T03:04:06.000Z',
  commitments: { request_sha256: 'c'.repeat(64), response_sha256: 'd'.repeat(64) },
};
const signed = signReceipt(receipt, node);
const lookup = {
  ...signed,
  node_id: receipt.node_id,
  job_id: receipt.job_id,
  model_id: receipt.model_id,
  node_class: 'pooled_sync',
  status: 'accepted',
  received_at: '2026-01-02T03:04:06.100Z',
  batch_id: null,
  receipt: JSON.parse(signed.receipt_canonical) as unknown,
  ledger_key_id: ledger.keyId,
  ledger_countersignature: countersign(
    ledger,
    acceptance({ receipt_hash: signed.receipt_hash, job_id: receipt.job_id, node_id: receipt.node_id, debited_price_wei: '112000', payout_price_wei: '100800' }),
  ),
};

/** Our receipt is leaf 2 of 5; the log has a checkpoint at 3 and at 5. */
const tree = new MerkleTree();
const leaves = [Buffer.from('first'), Buffer.from('second'), Buffer.from(signed.receipt_canonical, 'utf8'), Buffer.from('fourth'), Buffer.from('fifth')];
for (const leaf of leaves) tree.append(leafHash(leaf));
const signer = checkpointSignerFromIdentity(origin, ledger);
const checkpointAt = (size: number) => signCheckpoint({ origin, treeSize: size, rootHash: tree.root(size) }, signer);
const proof = {
  receipt_hash: signed.receipt_hash,
  leaf_index: 2,
  tree_size: 5,
  leaf_hash: hex(tree.leafHashAt(2)),
  audit_path: tree.inclusionProof(2, 5).map(hex),
  checkpoint: checkpointAt(5),
  root_hash: hex(tree.root(5)),
};

const text = (value: unknown) => JSON.stringify(value);
const withProof = (overrides: Partial<Evidence> = {}): Evidence => ({ receipt: text(lookup), proof: text(proof), ledgerKey, ...overrides });
const reason = (evidence: Evidence) => {
  const result = verifyEvidence(evidence);
  return result.ok ? 'valid' : result.reason;
};

t.test('valid evidence', async (t) => {
  t.same(verifyEvidence({ receipt: text(lookup) }), { ok: true, notes: [] }, 'the public lookup alone');
  t.same(verifyEvidence({ receipt: text(signed) }), { ok: true, notes: [] }, 'the bare signed receipt document');
  t.same(verifyEvidence(withProof()), { ok: true, notes: [] }, 'receipt, countersignature, proof and checkpoint with the ledger key');
  t.same(verifyEvidence({ receipt: text(lookup), nodeKey: node.publicKeyBase64url }), { ok: true, notes: [] }, 'pinned to the node key');
  const unsignedCheck = verifyEvidence(withProof({ ledgerKey: undefined }));
  t.ok(unsignedCheck.ok, 'the proof verifies without the ledger key');
  t.match(unsignedCheck.ok ? unsignedCheck.notes : [], [/signature was not checked/], 'and says what it could not check');
  const noCountersignature = verifyEvidence({ receipt: text(signed), ledgerKey });
  t.match(noCountersignature.ok ? noCountersignature.notes : [], [/no ledger countersignature/]);
  const earlier = { ...proof, tree_size: 3, audit_path: tree.inclusionProof(2, 3).map(hex), checkpoint: checkpointAt(3), root_hash: hex(tree.root(3)) };
  t.equal(reason(withProof({ proof: text(earlier) })), 'valid', 'against an earlier checkpoint');
  t.equal(reason(withProof({ proof: text({ ...earlier, checkpoint: undefined }), checkpoint: checkpointAt(3) })), 'valid', 'with the checkpoint in its own file');
});

t.test('the receipt itself', async (t) => {
  const flipped = signed.receipt_canonical.replace('"completion_tokens":12', '"completion_tokens":13');
  t.match(reason({ receipt: text({ ...lookup, receipt_canonical: flipped }) }), /^receipt_hash_mismatch:/, 'one changed byte');
  const otherSignature = node.sign(Buffer.from('something else'));
  t.match(reason({ receipt: text({ ...lookup, signature_ed25519: otherSignature }) }), /^invalid_signature: signature_ed25519 does not verify/);
  t.match(reason({ receipt: text(lookup), nodeKey: generateIdentity().publicKeyBase64url }), /^invalid_signature: .*not signed with the key registered/);
  t.match(reason({ receipt: text({ ...lookup, job_id: 'job_other' }) }), /^job_id: differs/, 'a lookup field that contradicts the signed bytes');
  t.match(reason({ receipt: text({ ...lookup, receipt: { ...receipt, debited_price_wei: '1' } }) }), /^receipt: differs/);
  t.match(reason({ receipt: text({ receipt_hash: signed.receipt_hash }) }), /^invalid_request: .*missing/);
  t.equal(reason({ receipt: '{"receipt_canonical":' }), 'the receipt is not JSON');
  t.equal(reason({ receipt: '[1]' }), 'the receipt is not a JSON object');
});

t.test('the ledger countersignature', async (t) => {
  const forged = countersign(ledger, acceptance({ receipt_hash: signed.receipt_hash, job_id: receipt.job_id, node_id: receipt.node_id, debited_price_wei: '1', payout_price_wei: '100800' }));
  t.match(reason({ receipt: text({ ...lookup, ledger_countersignature: forged }), ledgerKey }), /^ledger_countersignature: does not verify/, 'over another amount');
  const otherLedger = generateIdentity();
  t.match(reason({ receipt: text(lookup), ledgerKey: formatVerifierKey(origin, otherLedger.publicKeyRaw) }), /^ledger_key_id: .* is not the given ledger key/);
  t.match(reason({ receipt: text({ ...lookup, ledger_countersignature: 'not-a-signature' }), ledgerKey }), /^ledger_countersignature: malformed/);
});

t.test('the inclusion proof', async (t) => {
  const path = [...proof.audit_path];
  path[1] = path[1]!.replace(/^./, (first) => (first === '0' ? '1' : '0'));
  t.match(reason(withProof({ proof: text({ ...proof, audit_path: path }) })), /^proof: the audit path for leaf 2 does not lead/, 'a changed path node');
  t.match(reason(withProof({ proof: text({ ...proof, leaf_index: 3 }) })), /^proof: the audit path for leaf 3 does not lead/, 'another leaf index');
  t.match(reason(withProof({ proof: text({ ...proof, audit_path: path.slice(0, 2) }) })), /does not lead/, 'a shortened path');
  t.match(reason(withProof({ proof: text({ ...proof, root_hash: 'f'.repeat(64) }) })), /^proof: root_hash is not the checkpoint's root/);
  t.match(reason(withProof({ proof: text({ ...proof, leaf_hash: 'f'.repeat(64) }) })), /^proof: leaf_hash is not the RFC 9162 leaf hash/);
  t.match(reason(withProof({ proof: text({ ...proof, receipt_hash: 'f'.repeat(64) }) })), /^proof: is for another receipt/);
  t.match(reason(withProof({ proof: text({ ...proof, checkpoint: undefined }) })), /^proof: no checkpoint/);
  t.match(reason(withProof({ proof: text({ ...proof, tree_size: 0 }) })), /^proof: tree_size must be a positive integer/);
  t.match(reason(withProof({ proof: text({ ...proof, audit_path: ['xyz'] }) })), /^proof: audit_path must be/);
  t.match(reason(withProof({ checkpoint: checkpointAt(3) })), /^checkpoint: is for tree size 3, the proof for 5/);
});

t.test('the checkpoint', async (t) => {
  // The same note with another root, unsigned: caught by the signature, and without a key by the proof.
  const otherRoot = Buffer.from(tree.root(4)).toString('base64');
  const altered = proof.checkpoint.replace(Buffer.from(tree.root(5)).toString('base64'), otherRoot);
  t.not(altered, proof.checkpoint);
  t.match(reason(withProof({ checkpoint: altered })), /^checkpoint: The signature by b3iq\.ledger\/test does not verify/);
  t.match(reason(withProof({ checkpoint: altered, ledgerKey: undefined })), /^proof: root_hash is not the checkpoint's root/);
  const bareProof = text({ ...proof, root_hash: undefined });
  t.match(reason(withProof({ proof: bareProof, checkpoint: altered, ledgerKey: undefined })), /does not lead to the checkpoint's root/);
  const impostor = generateIdentity();
  const byImpostor = signCheckpoint({ origin, treeSize: 5, rootHash: tree.root(5) }, checkpointSignerFromIdentity(origin, impostor));
  t.match(reason(withProof({ checkpoint: byImpostor })), /^checkpoint: The note carries no signature by b3iq\.ledger\/test/);
  const otherLog = signCheckpoint({ origin: 'another.log/x', treeSize: 5, rootHash: tree.root(5) }, signer);
  t.match(reason(withProof({ checkpoint: otherLog })), /^checkpoint: is for the log another\.log\/x, not b3iq\.ledger\/test/);
  t.match(reason(withProof({ checkpoint: 'not a note', ledgerKey: undefined })), /^checkpoint: /);
});

t.test('the command: files, stdin, output and exit status', async (t) => {
  const directory = await mkdtemp(join(tmpdir(), 'b3iq-verify-'));
  t.teardown(() => rm(directory, { recursive: true, force: true }));
  const file = (name: string, content: string) => writeFile(join(directory, name), content).then(() => join(directory, name));
  const receiptFile = await file('receipt.json', text(lookup));
  const proofFile = await file('proof.json', text(proof));
  const badProofFile = await file('bad-proof.json', text({ ...proof, leaf_index: 1 }));
  const run = async (argv: string[], stdin = '') => {
    let stdout = '';
    let stderr = '';
    const io: CliIo = { readStdin: async () => stdin, stdout: (chunk) => void (stdout += chunk), stderr: (chunk) => void (stderr += chunk) };
    return { code: await runVerifyReceiptCli(argv, io), stdout, stderr };
  };

  t.same(await run([receiptFile, '--proof', proofFile, '--ledger-key', ledgerKey]), { code: 0, stdout: 'valid\n', stderr: '' });
  t.same(await run(['-'], text(signed)), { code: 0, stdout: 'valid\n', stderr: '' }, 'stdin with -');
  t.same(await run([], text(signed)), { code: 0, stdout: 'valid\n', stderr: '' }, 'stdin by default');
  const unchecked = await run([receiptFile, '--proof', proofFile]);
  t.equal(unchecked.code, 0);
  t.match(unchecked.stderr, /^note: the checkpoint's signature was not checked/);
  t.same(await run([receiptFile, '--proof', badProofFile, '--ledger-key', ledgerKey]), {
    code: 1,
    stdout: "invalid: proof: the audit path for leaf 1 does not lead to the checkpoint's root\n",
    stderr: '',
  });
  for (const argv of [[receiptFile, '--checkpoint', proofFile], [receiptFile, '--ledger-key', 'nonsense'], [join(directory, 'missing.json')], [receiptFile, receiptFile], ['--bogus']]) {
    const result = await run(argv);
    t.equal(result.code, 2, `usage error: ${argv.join(' ')}`);
    t.equal(result.stdout, '');
    t.match(result.stderr, /^b3iq verify-receipt: .*\n\nUsage: b3iq verify-receipt/);
  }
  t.match((await run(['--help'])).stdout, /^Usage: b3iq verify-receipt/);
});
