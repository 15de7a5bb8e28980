import type { FastifyInstance } from 'fastify';
import { DomainError } from '../errors.ts';

/** A `\u` escape of a surrogate in the raw text: the only way a lone one can arrive in a JSON body. */
const surrogateEscape = /\\u[dD][89a-fA-F]/;
/** With the `u` flag a well-formed pair is one code point, so only a lone surrogate is `Cs`. */
const loneSurrogate = /\p{Cs}/u;

/**
 * JSON bodies as Fastify parses them, plus one rule: strings must be well-formed Unicode. A lone
 * UTF-16 surrogate (`"\ud800"`) parses in JavaScript, but PostgreSQL's jsonb refuses it, so one in a
 * field that reaches an event (a pause's reason, a key's name) would fail the append after every
 * check had passed. It is refused here instead, as `invalid_json`, before any route runs.
 */
export function installJsonBodyParser(app: FastifyInstance): void {
  const parse = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    parse(request, text, (error, value) => {
      if (error !== null) return void done(error, undefined);
      if (surrogateEscape.test(text) && holdsLoneSurrogate(value)) {
        return void done(new DomainError('invalid_json', 'Strings must be well-formed Unicode: the body holds a lone UTF-16 surrogate'), undefined);
      }
      done(null, value);
    });
  });
}

function holdsLoneSurrogate(value: unknown): boolean {
  if (typeof value === 'string') return loneSurrogate.test(value);
  if (Array.isArray(value)) return value.some(holdsLoneSurrogate);
  if (typeof value === 'object' && value !== null) {
    return Object.entries(value).some(([key, member]) => loneSurrogate.test(key) || holdsLoneSurrogate(member));
  }
  return false;
}
