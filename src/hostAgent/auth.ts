import type { FastifyRequest } from 'fastify';
import { DispatchVerifier, nonceHeader, signatureHeader, timestampHeader } from '../router/dispatchSignature.ts';
import { HostAgentError } from './errors.ts';
import { localKeyPrefix, type LocalKeyScope, type LocalKeyVerifier } from './localKeys.ts';
import { setupTokenHeader, type SetupToken } from './setupToken.ts';

/**
 * Who may call which local route. Three credentials, each on its own surface:
 *
 * - the router's HMAC signature (docs/node-protocol.md, Dispatch): `/v1/models`, `/v1/chat/completions`;
 * - a `b3iq_local_` key with the route's scope (`models`, `chat`): the same two routes;
 * - the owner's setup token (`X-B3IQ-Setup-Token`): the operator routes, and `/v1/models`.
 *
 * A missing or bad credential of a kind the route takes is 401 `unauthorized`; a valid local key
 * without the scope is 403 `local_api_key_scope_denied`; a credential of a kind the route does not
 * take is 403 `credential_wrong_surface`. Refusals never say which check failed.
 */
export type Caller = { kind: 'router' } | { kind: 'local_key'; keyId: string } | { kind: 'owner' };

/** What a route needs: a local-key scope (router and, for models, owner also accepted) or the owner. */
export type Requirement = LocalKeyScope | 'owner';

const emptyBody = Buffer.alloc(0);
const bearerPattern = /^Bearer ([\x21-\x7e]{1,512})$/i;

export interface AuthenticatorParts {
  /** Without a dispatch secret (not enrolled yet) every router-signed request is refused. */
  dispatchSecret: Buffer | null;
  localKeys: LocalKeyVerifier;
  setupToken: SetupToken;
  now: () => Date;
}

export class LocalAuthenticator {
  readonly #verifier: DispatchVerifier | null;
  readonly #localKeys: LocalKeyVerifier;
  readonly #setupToken: SetupToken;
  readonly #now: () => Date;

  constructor(parts: AuthenticatorParts) {
    this.#verifier = parts.dispatchSecret === null ? null : new DispatchVerifier(parts.dispatchSecret);
    this.#localKeys = parts.localKeys;
    this.#setupToken = parts.setupToken;
    this.#now = parts.now;
  }

  async authenticate(request: FastifyRequest, requirement: Requirement): Promise<Caller> {
    const { headers } = request;
    const routerSigned = [signatureHeader, timestampHeader, nonceHeader].some((name) => headers[name] !== undefined);
    const setupToken = headers[setupTokenHeader];
    if (requirement === 'owner') {
      if (setupToken !== undefined) return this.#owner(request, setupToken);
      if (routerSigned || headers.authorization !== undefined) {
        throw refusal(request, 'credential_wrong_surface', 'wrong_surface', 'This route takes the setup token (X-B3IQ-Setup-Token), not a local key or router signature');
      }
      throw refusal(request, 'unauthorized', 'missing', 'The setup token is required (X-B3IQ-Setup-Token)');
    }
    if (routerSigned) return this.#router(request);
    if (headers.authorization !== undefined) return this.#localKey(request, headers.authorization, requirement);
    if (setupToken !== undefined) {
      if (requirement === 'models') return this.#owner(request, setupToken);
      throw refusal(request, 'credential_wrong_surface', 'wrong_surface', 'The setup token is not for chat; create a local key with `b3iq host-agent keys create`');
    }
    throw refusal(request, 'unauthorized', 'missing', 'A b3iq_local_ key (Authorization: Bearer) or a router signature is required');
  }

  /** Checks the router signature over the exact raw body bytes. */
  #router(request: FastifyRequest): Caller {
    const body = Buffer.isBuffer(request.body) ? request.body : emptyBody;
    const verification = this.#verifier?.verify({ method: request.method, path: request.url, body, headers: request.headers, now: this.#now() });
    if (verification?.ok === true) return { kind: 'router' };
    // "Bad signature" and "replayed nonce" look the same from outside.
    throw refusal(request, 'unauthorized', verification?.reason ?? 'not_enrolled', 'A valid router signature is required');
  }

  async #localKey(request: FastifyRequest, authorization: string, scope: LocalKeyScope): Promise<Caller> {
    const secret = bearerPattern.exec(authorization)?.[1];
    const check = secret?.startsWith(localKeyPrefix) === true ? await this.#localKeys.check(secret) : { ok: false as const };
    if (!check.ok) throw refusal(request, 'unauthorized', 'bad_local_key', 'A valid b3iq_local_ key is required');
    if (!check.scopes.includes(scope)) {
      throw refusal(request, 'local_api_key_scope_denied', 'scope', `This local key does not have the ${scope} scope`);
    }
    return { kind: 'local_key', keyId: check.keyId };
  }

  #owner(request: FastifyRequest, token: string | string[]): Caller {
    // A repeated header is ambiguous, and refused like a wrong token.
    if (typeof token === 'string' && this.#setupToken.matches(token)) return { kind: 'owner' };
    throw refusal(request, 'unauthorized', 'bad_setup_token', 'The setup token is not valid');
  }
}

function refusal(request: FastifyRequest, code: 'unauthorized' | 'local_api_key_scope_denied' | 'credential_wrong_surface', reason: string, message: string): HostAgentError {
  request.log.info({ reason }, 'request refused');
  return new HostAgentError(code, message);
}
