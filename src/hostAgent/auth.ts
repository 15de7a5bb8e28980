import type { FastifyRequest } from 'fastify';
import { DispatchVerifier } from '../router/dispatchSignature.ts';
import { HostAgentError } from './errors.ts';

/**
 * Who may call the local OpenAI-compatible routes. Today only the router, by an HMAC signature
 * with the secret the node received at enrollment (docs/node-protocol.md, Dispatch). Local
 * `b3iq_local_` keys come later: they will be a second Caller kind, checked in authenticate()
 * when no router signature is present, and /v1/chat/completions will then accept requests
 * without `b3iq_dispatch` (and sign no receipt) for local callers.
 */
export type Caller = { kind: 'router' };

const emptyBody = Buffer.alloc(0);

export class LocalAuthenticator {
  readonly #verifier: DispatchVerifier | null;
  readonly #now: () => Date;

  /** Without a dispatch secret (not enrolled yet) every signed request is refused. */
  constructor(dispatchSecret: Buffer | null, now: () => Date) {
    this.#verifier = dispatchSecret === null ? null : new DispatchVerifier(dispatchSecret);
    this.#now = now;
  }

  /**
   * Checks the router signature over the exact raw body bytes; throws 401 otherwise. The reason is
   * not told to the caller: "bad signature" and "replayed nonce" look the same from outside.
   */
  authenticate(request: FastifyRequest): Caller {
    const body = Buffer.isBuffer(request.body) ? request.body : emptyBody;
    const verification = this.#verifier?.verify({
      method: request.method,
      path: request.url,
      body,
      headers: request.headers,
      now: this.#now(),
    });
    if (verification?.ok === true) return { kind: 'router' };
    request.log.info({ reason: verification?.reason ?? 'not_enrolled' }, 'request refused: no valid router signature');
    throw new HostAgentError('unauthorized', 'A valid router signature is required');
  }
}
