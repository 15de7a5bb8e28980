/**
 * The closed list of stable error codes. Each code names the broken rule; the HTTP status is part
 * of the contract (DESIGN §6) and lives here, next to the code, so no route hard-codes a status.
 */
export const errorCodes = {
  invalid_request: 400,
  invalid_json: 400,
  invalid_amount: 400,
  unauthorized: 401,
  credential_wrong_surface: 403,
  not_found: 404,
  insufficient_balance: 402,
  customer_not_found: 404,
  customer_already_exists: 409,
  reservation_already_exists: 409,
  reservation_not_open: 409,
  reservation_already_resolved: 409,
  capture_exceeds_reservation: 400,
  idempotency_key_reused: 409,
  idempotency_key_in_use: 409,
  idempotency_result_unavailable: 409,
  gateway_key_already_exists: 409,
  gateway_api_key_scope_denied: 403,
  gateway_spend_cap_exceeded: 402,
  max_price_exceeded: 402,
  model_not_found: 404,
  node_not_found: 404,
  receipt_hash_mismatch: 400,
  invalid_signature: 400,
  receipt_already_accepted: 409,
  invalid_encrypted_request: 400,
  receipt_terms_mismatch: 400,
  transport_key_not_found: 404,
  transport_key_mismatch: 409,
  private_job_state_conflict: 409,
  receipt_not_logged: 404,
  checkpoint_not_found: 404,
  no_healthy_candidates: 503,
  router_dispatch_failed: 502,
  observed_benchmark_missing: 503,
  version_conflict: 409,
  payout_batch_invalid_transition: 409,
  payout_batch_empty: 409,
  payout_batch_transaction_mismatch: 409,
  payout_batch_preview_stale: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  rate_limited: 429,
  customer_paused: 403,
  model_paused: 503,
  node_paused: 503,
  payouts_paused: 409,
  internal_error: 500,
  service_unavailable: 503,
} as const;

export type ErrorCode = keyof typeof errorCodes;

/** A failure the caller can act on: it carries a stable code, and its status follows from the code. */
export class DomainError extends Error {
  readonly code: ErrorCode;
  readonly param: string | null;
  /** Response headers the refusal needs, such as Retry-After on 429. */
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: ErrorCode, detail: string, param: string | null = null, headers: Record<string, string> = {}) {
    super(detail);
    this.name = 'DomainError';
    this.code = code;
    this.param = param;
    this.headers = headers;
  }

  get status(): number {
    return errorCodes[this.code];
  }
}

export function isErrorCode(value: string): value is ErrorCode {
  return Object.hasOwn(errorCodes, value);
}

/** A broken invariant is a bug: it must surface as a 500, never as a client error. */
export function invariant(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`Invariant violated: ${message}`);
}
