import t from 'tap';
import { privateJobDecider, type QueuedTerms, type SubmittedResult } from '../../src/deciders/privateJob/decider.ts';
import { transportKeyDecider } from '../../src/deciders/privateJob/transportKey.ts';
import type { PrivateJobEvent, TransportKeyEvent } from '../../src/events/privateJob.ts';
import { privateJobEventSchemas } from '../../src/events/privateJob.ts';
import { spec } from '../support/deciderSpec.ts';

/** Given past events, when a command, then these events, this error, or nothing. */

const job = spec(privateJobDecider);
const keys = spec(transportKeyDecider);

const terms: QueuedTerms = {
  job_id: 'job-1',
  customer_id: 'cus_1',
  node_id: 'node_a',
  model_id: 'model-x',
  command_id: 'cmd_1',
  request_sha256: '1'.repeat(64),
  request_envelope_sha256: '2'.repeat(64),
  transport_key_id: 'x25519:0123456789abcdef',
  max_tokens: 1024,
  prompt_token_bound: 100,
  quoted_price_wei: '1000',
  reserved_price_wei: '1000',
  policy_version: 'p1',
  prompt_price_per_million_wei: '10',
  completion_price_per_million_wei: '20',
  node_share_bps: 9000,
  queued_at: '2026-01-01T00:00:00.000Z',
  claim_deadline: '2026-01-01T00:10:00.000Z',
};
const result: SubmittedResult = {
  job_id: 'job-1',
  node_id: 'node_a',
  command_id: 'cmd_1',
  response_envelope_sha256: '3'.repeat(64),
  usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
  receipt_hash: '4'.repeat(64),
  receipt_canonical: '{}',
  signature_ed25519: 'sig',
  node_key_id: 'ed25519:0123456789abcdef',
  node_public_key: 'key',
  debited_price_wei: '900',
  payout_price_wei: '810',
  latency_ms: 5,
  submitted_at: '2026-01-01T00:02:00.000Z',
};

const queued: PrivateJobEvent = { type: 'PrivateJobQueued', data: terms };
const claimed: PrivateJobEvent = {
  type: 'PrivateJobClaimed',
  data: { job_id: 'job-1', node_id: 'node_a', command_id: 'cmd_1', claimed_at: '2026-01-01T00:01:00.000Z', result_deadline: '2026-01-01T00:11:00.000Z' },
};
const submitted: PrivateJobEvent = { type: 'PrivateJobResultSubmitted', data: result };
const completed: PrivateJobEvent = { type: 'PrivateJobCompleted', data: { job_id: 'job-1', receipt_hash: result.receipt_hash, completed_at: '2026-01-01T00:02:01.000Z' } };
const claim = (claimedAt: string, nodeId = 'node_a') =>
  ({ type: 'ClaimPrivateJob', jobId: 'job-1', nodeId, commandId: 'cmd_1', claimedAt, resultDeadline: '2026-01-01T00:20:00.000Z' }) as const;
const nodeFail = { type: 'FailPrivateJob', jobId: 'job-1', nodeId: 'node_a', commandId: 'cmd_1', reason: 'decrypt_failed', failedAt: '2026-01-01T00:03:00.000Z' } as const;

t.test('every event the decider makes matches its strict schema', async (t) => {
  for (const event of [queued, claimed, submitted, completed]) t.ok(privateJobEventSchemas[event.type].safeParse(event.data).success, event.type);
});

t.test('queue: a new job is queued; the same request again is nothing; another request or customer is refused', async () => {
  job.given([]).when({ type: 'QueuePrivateJob', terms }).then([queued]);
  job.given([queued]).when({ type: 'QueuePrivateJob', terms: { ...terms, queued_at: '2026-01-01T00:05:00.000Z' } }).thenNothing();
  job.given([queued]).when({ type: 'QueuePrivateJob', terms: { ...terms, request_sha256: '9'.repeat(64) } }).thenThrows('idempotency_key_reused');
  job.given([queued]).when({ type: 'QueuePrivateJob', terms: { ...terms, customer_id: 'cus_2' } }).thenThrows('idempotency_key_reused');
});

t.test('claim: only the assigned node, before the deadline, once', async () => {
  job.given([]).when(claim('2026-01-01T00:01:00.000Z')).thenThrows('not_found');
  job.given([queued]).when(claim('2026-01-01T00:01:00.000Z')).then([{ ...claimed, data: { ...claimed.data, result_deadline: '2026-01-01T00:20:00.000Z' } }]);
  job.given([queued]).when(claim('2026-01-01T00:01:00.000Z', 'node_b')).thenThrows('not_found');
  job.given([queued]).when({ ...claim('2026-01-01T00:01:00.000Z'), commandId: 'cmd_2' }).thenThrows('not_found');
  job.given([queued]).when(claim('2026-01-01T00:10:00.001Z')).thenThrows('private_job_state_conflict');
  job.given([queued, claimed]).when(claim('2026-01-01T00:01:30.000Z')).thenNothing();
  job.given([queued, claimed, submitted, completed]).when(claim('2026-01-01T00:05:00.000Z')).thenThrows('private_job_state_conflict');
});

t.test('result: accepted once from claimed; the same again is nothing; anything else conflicts', async () => {
  job.given([queued, claimed]).when({ type: 'SubmitPrivateResult', result }).then([submitted]);
  job.given([queued]).when({ type: 'SubmitPrivateResult', result }).thenThrows('private_job_state_conflict');
  job.given([queued, claimed, submitted]).when({ type: 'SubmitPrivateResult', result }).thenNothing();
  job.given([queued, claimed, submitted, completed]).when({ type: 'SubmitPrivateResult', result }).thenNothing();
  job.given([queued, claimed, submitted]).when({ type: 'SubmitPrivateResult', result: { ...result, receipt_hash: '5'.repeat(64) } }).thenThrows('private_job_state_conflict');
  job.given([queued, claimed]).when({ type: 'SubmitPrivateResult', result: { ...result, node_id: 'node_b' } }).thenThrows('not_found');
});

t.test('complete: only after a result, once', async () => {
  const command = { type: 'CompletePrivateJob', jobId: 'job-1', completedAt: '2026-01-01T00:02:01.000Z' } as const;
  job.given([queued, claimed, submitted]).when(command).then([completed]);
  job.given([queued, claimed, submitted, completed]).when(command).thenNothing();
  job.given([queued, claimed]).when(command).thenThrows('private_job_state_conflict');
});

t.test('fail: the node gives up a job it was sent or claimed; the control plane may give up any open job', async () => {
  const failed: PrivateJobEvent = { type: 'PrivateJobFailed', data: { job_id: 'job-1', node_id: 'node_a', reason: 'decrypt_failed', failed_at: '2026-01-01T00:03:00.000Z' } };
  job.given([queued]).when(nodeFail).then([failed]);
  job.given([queued, claimed]).when(nodeFail).then([failed]);
  job.given([queued, claimed, failed]).when(nodeFail).thenNothing();
  job.given([queued, claimed, submitted]).when(nodeFail).thenThrows('private_job_state_conflict');
  job.given([queued]).when({ ...nodeFail, nodeId: 'node_b' }).thenThrows('not_found');
  const released = { ...nodeFail, nodeId: null, commandId: null, reason: 'reservation_released' } as const;
  job.given([queued, claimed, submitted]).when(released).then([{ ...failed, data: { ...failed.data, reason: 'reservation_released' } }]);
  job.given([queued, claimed, submitted, completed]).when(released).thenThrows('private_job_state_conflict');
});

t.test('expire: queued past its claim deadline or claimed past its result deadline; nothing otherwise', async () => {
  const expire = (now: string) => ({ type: 'ExpirePrivateJob', jobId: 'job-1', now }) as const;
  job.given([queued]).when(expire('2026-01-01T00:10:00.001Z')).then([{ type: 'PrivateJobExpired', data: { job_id: 'job-1', from_status: 'queued', expired_at: '2026-01-01T00:10:00.001Z' } }]);
  job.given([queued]).when(expire('2026-01-01T00:09:59.000Z')).thenNothing();
  job.given([queued, claimed]).when(expire('2026-01-01T00:10:30.000Z')).thenNothing();
  job.given([queued, claimed]).when(expire('2026-01-01T00:11:00.001Z')).then([{ type: 'PrivateJobExpired', data: { job_id: 'job-1', from_status: 'claimed', expired_at: '2026-01-01T00:11:00.001Z' } }]);
  job.given([queued, claimed, submitted]).when(expire('2026-01-02T00:00:00.000Z')).thenNothing();
  job.given([]).when(expire('2026-01-02T00:00:00.000Z')).thenThrows('not_found');
});

t.test('purge: ended jobs only, once', async () => {
  const purge = { type: 'PurgePrivateEnvelopes', jobId: 'job-1', reason: 'retention', purgedAt: '2026-02-01T00:00:00.000Z' } as const;
  const purged: PrivateJobEvent = { type: 'PrivateJobEnvelopesPurged', data: { job_id: 'job-1', reason: 'retention', purged_at: '2026-02-01T00:00:00.000Z' } };
  job.given([queued, claimed, submitted, completed]).when(purge).then([purged]);
  job.given([queued, claimed, submitted, completed, purged]).when(purge).thenNothing();
  job.given([queued, claimed]).when(purge).thenThrows('private_job_state_conflict');
});

t.test('transport keys: registered, re-registered as a no-op, rotated forward, never rolled back', async () => {
  const registration = (keyId: string, at: string) => ({
    node_id: 'node_a',
    key_id: keyId,
    public_key_x25519: `key-${keyId}`,
    registration_payload: '{}',
    registration_signature: 'sig',
    registered_at: at,
  });
  const first: TransportKeyEvent = { type: 'NodeTransportKeyRegistered', data: registration('x25519:1', '2026-01-01T00:00:00.000Z') };
  const register = (keyId: string, at: string) => ({ type: 'RegisterTransportKey', registration: registration(keyId, at) }) as const;
  keys.given([]).when(register('x25519:1', '2026-01-01T00:00:00.000Z')).then([first]);
  keys.given([first]).when(register('x25519:1', '2026-01-01T01:00:00.000Z')).thenNothing();
  keys.given([first]).when(register('x25519:2', '2026-01-02T00:00:00.000Z')).then([{ type: 'NodeTransportKeyRegistered', data: registration('x25519:2', '2026-01-02T00:00:00.000Z') }]);
  keys.given([first]).when(register('x25519:0', '2025-12-31T00:00:00.000Z')).thenNothing();
});
