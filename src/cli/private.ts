import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { allProjections } from '../../projections/index.ts';
import { ProjectionRunner } from '../../projections/runner.ts';
import { loadConfig } from '../config/config.ts';
import { createPrivateJobServices } from '../privateJobs/environment.ts';
import { createClientKey, readClientKey, type ClientKey } from '../privateJobs/keyFiles.ts';
import { purgeTerminalEnvelopes } from '../privateJobs/purge.ts';
import { nodeIdSchema, privateJobIdSchema } from '../privateJobs/schemas.ts';
import { decodeBase64urlStrict, openResponse, responseEnvelopeSchema, sealRequest, transportKeyId, TransportError } from '../privateJobs/transport.ts';
import { openDatabase } from '../service.ts';
import { parseCommandLine } from './arguments.ts';

/**
 * `b3iq private seal|open`: the client helper for private jobs (docs/private-transport.md), and
 * `b3iq admin purge`: removes the envelopes of old terminal private jobs. Private keys are read from
 * files only (mode 0600), never from arguments.
 */

const privateUsage = `Usage:
  b3iq private seal (--node-key FILE | --node-public-key B64) --client-key FILE [--body [--node-id ID]
                    [--job-id ID] [--max-price-wei W]] < request.json > envelope.json
      Seals an OpenAI chat request (JSON on stdin, sealed byte for byte) to the node's transport key.
      --node-key FILE is the JSON of GET /v1/nodes/{node_id}/transport-key. --client-key FILE is
      created (mode 0600) with a fresh key when it does not exist; keep it to open the answer.
      --body prints a whole POST /v1/private-inference/jobs body instead of the envelope.
  b3iq private open --client-key FILE < job-or-envelope.json > answer.json
      Opens a sealed response: an envelope, or a job as GET /v1/private-inference/jobs/{id} returns it.`;

const purgeUsage = `Usage: b3iq admin purge --terminal-before DATE --reason TEXT [--dry-run] [--limit N] [--data-dir DIR]

Deletes the encrypted envelopes of private jobs that ended (completed, failed or expired) before DATE
(ISO 8601) and records a PrivateJobEnvelopesPurged event per job with the reason. Billing, receipts,
payouts and the transparency log keep every piece of evidence. Reads the embedded database in DIR,
or DATABASE_URL when set.`;

export interface PrivateCliIo {
  readStdin(): Promise<Buffer>;
  stdout(bytes: string | Uint8Array): void;
  stderr(text: string): void;
}

const maxStdinBytes = 8 * 1_048_576;

const processIo: PrivateCliIo = {
  async readStdin() {
    const chunks: Buffer[] = [];
    let length = 0;
    for await (const chunk of process.stdin) {
      length += (chunk as Buffer).length;
      if (length > maxStdinBytes) throw new RangeError(`stdin is larger than ${maxStdinBytes} bytes`);
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks);
  },
  stdout: (bytes) => void process.stdout.write(bytes),
  stderr: (text) => void process.stderr.write(text),
};

const nodeKeyFileSchema = z.looseObject({ public_key_x25519: z.string(), key_id: z.string().optional(), node_id: z.string().optional() });

export async function runPrivateCli(argv: string[], io: PrivateCliIo = processIo): Promise<number> {
  const [command, ...rest] = argv;
  const { values } = parseCommandLine({
    args: rest,
    options: {
      'node-key': { type: 'string' },
      'node-public-key': { type: 'string' },
      'client-key': { type: 'string' },
      'node-id': { type: 'string' },
      'job-id': { type: 'string' },
      'max-price-wei': { type: 'string' },
      body: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help || values['client-key'] === undefined || (command !== 'seal' && command !== 'open')) {
    io.stdout(`${privateUsage}\n`);
    return values.help ? 0 : 2;
  }
  try {
    if (command === 'open') return await open(values['client-key'], io);
    const node = await nodeKey(values['node-key'], values['node-public-key']);
    return await seal({ ...values, clientKeyPath: values['client-key'], node }, io);
  } catch (error) {
    if (!(error instanceof UsageError || error instanceof TransportError)) throw error;
    io.stderr(`b3iq private ${command}: ${error.message}\n`);
    return error instanceof UsageError ? 2 : 1;
  }
}

class UsageError extends Error {}

async function nodeKey(file: string | undefined, inline: string | undefined): Promise<{ publicKey: Uint8Array; nodeId: string | null }> {
  if ((file === undefined) === (inline === undefined)) throw new UsageError('give exactly one of --node-key FILE and --node-public-key B64');
  let text = inline;
  let nodeId: string | null = null;
  if (file !== undefined) {
    const parsed = nodeKeyFileSchema.safeParse(JSON.parse(await readFile(file, 'utf8')));
    if (!parsed.success) throw new UsageError(`${file} is not a transport key (GET /v1/nodes/{node_id}/transport-key)`);
    text = parsed.data.public_key_x25519;
    nodeId = parsed.data.node_id ?? null;
    const publicKey = decodeBase64urlStrict(text);
    if (publicKey !== null && parsed.data.key_id !== undefined && parsed.data.key_id !== transportKeyId(publicKey)) {
      throw new UsageError(`${file}: key_id does not name public_key_x25519`);
    }
  }
  const publicKey = decodeBase64urlStrict(text ?? '');
  if (publicKey === null || publicKey.length !== 32) throw new UsageError('the node public key must be base64url of 32 bytes');
  return { publicKey, nodeId };
}

async function seal(
  options: { clientKeyPath: string; node: { publicKey: Uint8Array; nodeId: string | null }; body?: boolean; 'node-id'?: string; 'job-id'?: string; 'max-price-wei'?: string },
  io: PrivateCliIo,
): Promise<number> {
  const plaintext = await io.readStdin();
  let request: unknown;
  try {
    request = JSON.parse(plaintext.toString('utf8'));
  } catch {
    throw new UsageError('stdin must be the JSON of an OpenAI chat completion request');
  }
  if (typeof request !== 'object' || request === null || Array.isArray(request)) throw new UsageError('stdin must be a JSON object');
  const client = await clientKeyFor(options.clientKeyPath, options.node.publicKey);
  const envelope = sealRequest(plaintext, client.secretKey, options.node.publicKey);
  if (options.body !== true) {
    io.stdout(`${JSON.stringify(envelope)}\n`);
    return 0;
  }
  const nodeId = options['node-id'] ?? options.node.nodeId;
  const model = (request as { model?: unknown }).model;
  if (nodeId === null || !nodeIdSchema.safeParse(nodeId).success) throw new UsageError('--body needs the node id: --node-id, or a --node-key file that names it');
  if (typeof model !== 'string') throw new UsageError('--body needs the request to name its model');
  if (options['job-id'] !== undefined && !privateJobIdSchema.safeParse(options['job-id']).success) throw new UsageError('--job-id must be 1-128 letters, digits, dot, underscore or dash');
  const body = {
    ...(options['job-id'] === undefined ? {} : { job_id: options['job-id'] }),
    node_id: nodeId,
    model_id: model,
    ...(options['max-price-wei'] === undefined ? {} : { max_price_wei: options['max-price-wei'] }),
    encrypted_request: envelope,
  };
  io.stdout(`${JSON.stringify(body)}\n`);
  return 0;
}

/** The client key in the file, created when the file does not exist; it must seal to the same node key. */
async function clientKeyFor(path: string, nodePublicKey: Uint8Array): Promise<ClientKey> {
  const existing = await readClientKey(path);
  if (existing === null) return createClientKey(path, nodePublicKey);
  if (Buffer.compare(Buffer.from(existing.nodePublicKey), Buffer.from(nodePublicKey)) !== 0) {
    throw new UsageError(`${path} belongs to another node key; use a new --client-key file for this node`);
  }
  return existing;
}

async function open(clientKeyPath: string, io: PrivateCliIo): Promise<number> {
  const client = await readClientKey(clientKeyPath);
  if (client === null) throw new UsageError(`no client key file at ${clientKeyPath}`);
  let input: unknown;
  try {
    input = JSON.parse((await io.readStdin()).toString('utf8'));
  } catch {
    throw new UsageError('stdin must be JSON: an envelope or a private job');
  }
  const candidate = typeof input === 'object' && input !== null && 'encrypted_response' in input ? (input as { encrypted_response: unknown }).encrypted_response : input;
  if (candidate === null) throw new UsageError('the job has no response yet (or its envelopes were purged)');
  const envelope = responseEnvelopeSchema.safeParse(candidate);
  if (!envelope.success) throw new UsageError('stdin holds no b3iq-private-transport-v1 envelope');
  io.stdout(openResponse(envelope.data, client.secretKey, client.nodePublicKey));
  return 0;
}

export async function runPurgeCli(argv: string[], io: Pick<PrivateCliIo, 'stdout' | 'stderr'> = processIo): Promise<number> {
  const { values } = parseCommandLine({
    args: argv,
    options: {
      'terminal-before': { type: 'string' },
      reason: { type: 'string' },
      'dry-run': { type: 'boolean' },
      limit: { type: 'string' },
      'data-dir': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const before = values['terminal-before'] === undefined ? Number.NaN : Date.parse(values['terminal-before']);
  const limit = Number(values.limit ?? '1000');
  if (values.help || Number.isNaN(before) || values.reason === undefined || values.reason.length === 0 || !Number.isSafeInteger(limit) || limit < 1) {
    io.stdout(`${purgeUsage}\n`);
    return values.help ? 0 : 2;
  }
  const config = loadConfig(process.env, { dataDir: values['data-dir'] });
  const { server, ledger } = await openDatabase(config);
  const runner = new ProjectionRunner(ledger.store, ledger.db, allProjections);
  try {
    const env = {
      services: createPrivateJobServices(ledger.store, ledger.pool),
      db: ledger.db,
      now: () => new Date(),
      // The next batch is chosen from the read model, so it must include this batch's purges.
      waitForProjections: async () => (await runner.catchUp(), true),
    };
    const result = await purgeAll(env, new Date(before), values.reason, values['dry-run'] === true, limit);
    const verb = values['dry-run'] === true ? 'would purge' : 'purged';
    io.stdout(`${verb} the envelopes of ${result.jobs} private jobs that ended before ${new Date(before).toISOString()} (${result.envelopes} envelopes removed)\n`);
    return 0;
  } finally {
    await ledger.close();
    if (server?.owned) await server.stop();
  }
}

/** Purges in batches of `limit` until none is left; a dry run lists one batch. */
async function purgeAll(env: Parameters<typeof purgeTerminalEnvelopes>[0], before: Date, reason: string, dryRun: boolean, limit: number) {
  let jobs = 0;
  let envelopes = 0;
  for (;;) {
    const batch = await purgeTerminalEnvelopes(env, before, reason, { dryRun, limit });
    jobs += batch.jobIds.length;
    envelopes += batch.envelopesRemoved;
    if (dryRun || batch.jobIds.length < limit) return { jobs, envelopes };
  }
}
