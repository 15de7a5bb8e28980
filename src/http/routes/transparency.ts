import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { DomainError, invariant } from '../../errors.ts';
import { findCheckpoint, findLeaf, listNodeKeys, type CheckpointRow } from '../../queries/transparency.ts';
import { hex } from '../../transparency/logState.ts';
import { emptyRoot } from '../../transparency/merkle.ts';
import type { TransparencyProofs } from '../../transparency/sequencer.ts';
import type { AppDependencies } from '../app.ts';
import { nativeErrorResponse } from '../schemas.ts';

const errors = { 400: nativeErrorResponse, 404: nativeErrorResponse, 503: nativeErrorResponse };
const hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters');
/** Tree sizes as decimal text without sign or leading zeros; 15 digits stay exact as numbers. */
const positiveSize = z.string().regex(/^[1-9][0-9]{0,14}$/, 'must be a positive integer without leading zeros');
const size = z.string().regex(/^(0|[1-9][0-9]{0,14})$/, 'must be a non-negative integer without leading zeros');
/** How long a request waits for this process's tree to reach a checkpoint another process published. */
const treeWaitMs = 2_000;

const signedNote = {
  description: 'The checkpoint as a C2SP signed note (tlog-checkpoint), signed by the ledger key',
  content: { 'text/plain': { schema: z.string() } },
};

const inclusionView = z.object({
  receipt_hash: hex64,
  leaf_index: z.number().int(),
  tree_size: z.number().int(),
  leaf_hash: hex64.meta({ description: 'SHA-256(0x00 || receipt_canonical as UTF-8), RFC 9162' }),
  audit_path: z.array(hex64).meta({ description: 'RFC 9162 inclusion proof, from the leaf up' }),
  checkpoint: z.string().meta({ description: 'The signed note of the checkpoint of size tree_size' }),
  root_hash: hex64,
});

const consistencyView = z.object({
  first: z.number().int(),
  second: z.number().int(),
  proof: z.array(hex64).meta({ description: 'RFC 9162 consistency proof' }),
  first_root_hash: hex64,
  second_root_hash: hex64,
  first_checkpoint: z.string().optional().meta({ description: 'Absent for the empty tree (first = 0)' }),
  second_checkpoint: z.string(),
});

const publicKeysView = z.object({
  ledger: z.object({
    key_id: z.string(),
    key_name: z.string().meta({ description: 'The log origin; the name in checkpoint signature lines' }),
    public_key: z.string().meta({ description: 'Raw Ed25519 public key, base64url' }),
    verifier_key: z.string().meta({ description: 'C2SP signed-note verifier key: <name>+<key hash>+<base64(0x01 || key)>' }),
  }),
  nodes: z.array(z.object({ node_id: z.string(), key_id: z.string(), public_key: z.string() })),
  next_after: z.string().nullable().meta({ description: 'Pass as `after` for the next page; null on the last page' }),
});

/** The public transparency log: signed checkpoints, inclusion and consistency proofs, and the keys to check them. */
export function transparencyRoutes(dependencies: AppDependencies): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      '/v1/transparency/checkpoint',
      { schema: { summary: 'The latest signed checkpoint of the transparency log; public', response: { 200: signedNote, ...errors } } },
      async (_request, reply) => {
        const checkpoint = await requireCheckpoint(dependencies, null, null);
        return reply.type('text/plain; charset=utf-8').header('cache-control', 'no-cache').send(checkpoint.note);
      },
    );

    app.get(
      '/v1/transparency/checkpoints/:tree_size',
      {
        schema: {
          summary: 'The signed checkpoint published at this tree size; public',
          params: z.strictObject({ tree_size: positiveSize }),
          response: { 200: signedNote, ...errors },
        },
      },
      async (request, reply) => {
        const checkpoint = await requireCheckpoint(dependencies, Number(request.params.tree_size), 'tree_size');
        // A checkpoint at a size is one event of the log: it never changes.
        return reply.type('text/plain; charset=utf-8').header('cache-control', 'public, max-age=31536000, immutable').send(checkpoint.note);
      },
    );

    app.get(
      '/v1/receipts/:receipt_hash/inclusion',
      {
        schema: {
          summary: 'Proof that an accepted receipt is in the transparency log as of a published checkpoint; public',
          params: z.strictObject({ receipt_hash: hex64 }),
          querystring: z.strictObject({ tree_size: positiveSize.optional().meta({ description: 'A published checkpoint size; the latest by default' }) }),
          response: { 200: inclusionView, ...errors },
        },
      },
      async (request) => {
        const leaf = await findLeaf(dependencies.db, request.params.receipt_hash);
        if (leaf === null) throw new DomainError('receipt_not_logged', 'No receipt with this hash is in the transparency log yet');
        const requested = request.query.tree_size === undefined ? null : Number(request.query.tree_size);
        const checkpoint = await requireCheckpoint(dependencies, requested, 'tree_size');
        if (leaf.leaf_index >= checkpoint.tree_size) {
          throw new DomainError('receipt_not_logged', `The receipt is leaf ${leaf.leaf_index}, not in the tree of size ${checkpoint.tree_size}; a later checkpoint will include it`);
        }
        const tree = await treeAt(dependencies.transparency, checkpoint);
        invariant(hex(tree.leafHashAt(leaf.leaf_index)) === leaf.leaf_hash, `leaf ${leaf.leaf_index} of the tree differs from the projected one`);
        return {
          receipt_hash: leaf.receipt_hash,
          leaf_index: leaf.leaf_index,
          tree_size: checkpoint.tree_size,
          leaf_hash: leaf.leaf_hash,
          audit_path: tree.inclusionProof(leaf.leaf_index, checkpoint.tree_size).map(hex),
          checkpoint: checkpoint.note,
          root_hash: checkpoint.root_hash,
        };
      },
    );

    app.get(
      '/v1/transparency/consistency',
      {
        schema: {
          summary: 'Proof that a published checkpoint extends an earlier one; public',
          querystring: z.strictObject({
            first: size.meta({ description: 'A published checkpoint size, or 0 for the empty tree' }),
            second: positiveSize.optional().meta({ description: 'A published checkpoint size; the latest by default' }),
          }),
          response: { 200: consistencyView, ...errors },
        },
      },
      async (request) => {
        const firstSize = Number(request.query.first);
        if (request.query.second !== undefined && firstSize > Number(request.query.second)) {
          throw new DomainError('invalid_request', 'Invalid first: must not exceed second', 'first');
        }
        const second = await requireCheckpoint(dependencies, request.query.second === undefined ? null : Number(request.query.second), 'second');
        if (firstSize > second.tree_size) throw new DomainError('invalid_request', `Invalid first: must not exceed the latest checkpoint size ${second.tree_size}`, 'first');
        const first = firstSize === 0 ? null : await requireCheckpoint(dependencies, firstSize, 'first');
        const tree = await treeAt(dependencies.transparency, second);
        if (first !== null) invariant(hex(tree.root(first.tree_size)) === first.root_hash, `the tree's root at ${first.tree_size} is not the signed one`);
        return {
          first: firstSize,
          second: second.tree_size,
          proof: tree.consistencyProof(firstSize, second.tree_size).map(hex),
          first_root_hash: first?.root_hash ?? hex(emptyRoot()),
          second_root_hash: second.root_hash,
          ...(first === null ? {} : { first_checkpoint: first.note }),
          second_checkpoint: second.note,
        };
      },
    );

    app.get(
      '/v1/transparency/public-keys',
      {
        schema: {
          summary: 'The ledger key that signs checkpoints and acceptances, and every enrolled node key; public',
          querystring: z.strictObject({
            after: z.string().regex(/^node_[0-9a-f]{24}$/, 'must be a node id').optional(),
            limit: z.coerce.number().int().min(1).max(1000).default(1000),
          }),
          response: { 200: publicKeysView, ...errors },
        },
      },
      async (request) => {
        const { transparency } = dependencies;
        const rows = await listNodeKeys(dependencies.db, request.query.after ?? null, request.query.limit + 1);
        const page = rows.slice(0, request.query.limit);
        return {
          ledger: { key_id: transparency.ledgerKeyId, key_name: transparency.origin, public_key: transparency.ledgerPublicKey, verifier_key: transparency.verifierKey },
          nodes: page.map((row) => ({ node_id: row.node_id, key_id: row.key_id, public_key: row.public_key_ed25519 })),
          next_after: rows.length > page.length ? (page[page.length - 1]?.node_id ?? null) : null,
        };
      },
    );
  };
}

/** The checkpoint at this size, or the latest when the size is null; `param` names the size in a 404. */
async function requireCheckpoint(dependencies: AppDependencies, treeSize: number | null, param: string | null): Promise<CheckpointRow> {
  const checkpoint = await findCheckpoint(dependencies.db, treeSize);
  if (checkpoint !== null) return checkpoint;
  if (treeSize === null) throw new DomainError('checkpoint_not_found', 'No checkpoint has been published yet');
  throw new DomainError('checkpoint_not_found', `No checkpoint was published at tree size ${treeSize}`, param);
}

/**
 * This process's tree once it holds the checkpoint's leaves, checked against the signed root. A
 * checkpoint another server published can be projected before this process has read its leaves,
 * so the request waits briefly and then asks the client to retry.
 */
async function treeAt(transparency: TransparencyProofs, checkpoint: CheckpointRow): Promise<TransparencyProofs['tree']> {
  if (!(await transparency.waitForTreeSize(checkpoint.tree_size, treeWaitMs))) {
    throw new DomainError('service_unavailable', 'The transparency tree is still catching up; retry shortly', null, { 'retry-after': '1' });
  }
  const tree = transparency.tree;
  invariant(hex(tree.root(checkpoint.tree_size)) === checkpoint.root_hash, `the tree's root at ${checkpoint.tree_size} is not the signed one`);
  return tree;
}
