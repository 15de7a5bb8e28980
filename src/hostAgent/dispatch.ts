import { z } from 'zod';
import { receiptSchema } from '../receipts/receipt.ts';
import { HostAgentError } from './errors.ts';
import { localDispatch, localJobPrefix, type ReceiptOrigin } from './receipts.ts';

/**
 * The router's terms for one job, sent as the `b3iq_dispatch` member of the chat request
 * (docs/node-protocol.md, Dispatch). Every value is later signed into the receipt, so the fields
 * use the receipt's own validators: a dispatch that passes here always yields a valid receipt.
 */
const receiptFields = receiptSchema.shape;

export const dispatchSchema = z.strictObject({
  job_id: receiptFields.job_id,
  node_id: receiptFields.node_id,
  model_id: receiptFields.model_id,
  policy_version: receiptFields.policy_version,
  pricing: receiptFields.pricing,
  quoted_price_wei: receiptFields.quoted_price_wei,
  reserved_price_wei: receiptFields.reserved_price_wei,
  node_share_bps: z.number().int().min(0).max(10_000),
});

export type Dispatch = z.infer<typeof dispatchSchema>;

export interface ForwardedRequest {
  /** Who sent it: the router (billed through the gateway) or an app with a local key (never billed). */
  origin: ReceiptOrigin;
  /** The terms signed into the receipt: the router's, or the zero-priced local ones. */
  dispatch: Dispatch;
  /** The exact bytes sent to the runtime: the request without `b3iq_dispatch`. */
  body: Buffer;
  stream: boolean;
}

/**
 * Reads a router-signed chat request: parses it, checks the dispatch terms against this node and
 * the requested model, and removes them. Every failure is the caller's fault (400).
 */
export function readDispatchedRequest(raw: Buffer, nodeId: string): ForwardedRequest {
  const request = parseObject(raw);
  const parsed = dispatchSchema.safeParse(request['b3iq_dispatch']);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const param = ['b3iq_dispatch', ...(issue?.path ?? []).map(String)].join('.');
    throw new HostAgentError('invalid_request', `Invalid ${param}: ${issue?.message ?? 'does not match the schema'}`, param);
  }
  const dispatch = parsed.data;
  if (dispatch.job_id.startsWith(localJobPrefix)) {
    throw new HostAgentError('invalid_request', `Routed job ids must not start with ${localJobPrefix}`, 'b3iq_dispatch.job_id');
  }
  if (dispatch.node_id !== nodeId) {
    throw new HostAgentError('invalid_request', 'b3iq_dispatch.node_id names another node', 'b3iq_dispatch.node_id');
  }
  // The receipt names dispatch.model_id; the runtime runs body.model. They must be the same model.
  if (request['model'] !== dispatch.model_id) {
    throw new HostAgentError('invalid_request', 'model must equal b3iq_dispatch.model_id', 'model');
  }
  checkStream(request);
  delete request['b3iq_dispatch'];
  return { origin: 'router', dispatch, body: Buffer.from(JSON.stringify(request), 'utf8'), stream: request['stream'] === true };
}

/**
 * Reads a chat request from an app holding a local key: an ordinary OpenAI request, forwarded as
 * it is except that a stream always asks the runtime for usage (a receipt needs it; OpenAI
 * clients ignore the extra usage chunk). Dispatch terms are the router's alone.
 */
export function readLocalRequest(raw: Buffer, nodeId: string, jobId: string): ForwardedRequest {
  const request = parseObject(raw);
  if (request['b3iq_dispatch'] !== undefined) {
    throw new HostAgentError('invalid_request', 'b3iq_dispatch is accepted only from the router', 'b3iq_dispatch');
  }
  const model = request['model'];
  if (typeof model !== 'string' || !receiptFields.model_id.safeParse(model).success) {
    throw new HostAgentError('invalid_request', 'model must be a model id of 1-128 identifier characters', 'model');
  }
  checkStream(request);
  const stream = request['stream'] === true;
  if (stream) {
    const options = request['stream_options'];
    if (options !== undefined && options !== null && (typeof options !== 'object' || Array.isArray(options))) {
      throw new HostAgentError('invalid_request', 'stream_options must be an object', 'stream_options');
    }
    request['stream_options'] = { ...(options ?? {}), include_usage: true };
  }
  return { origin: 'local', dispatch: localDispatch(nodeId, model, jobId), body: Buffer.from(JSON.stringify(request), 'utf8'), stream };
}

function checkStream(request: Record<string, unknown>): void {
  if (request['stream'] !== undefined && request['stream'] !== null && typeof request['stream'] !== 'boolean') {
    throw new HostAgentError('invalid_request', 'stream must be a boolean', 'stream');
  }
}

function parseObject(raw: Buffer): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new HostAgentError('invalid_json', 'The request body is not valid JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new HostAgentError('invalid_request', 'The request body must be a JSON object');
  }
  return parsed as Record<string, unknown>;
}
