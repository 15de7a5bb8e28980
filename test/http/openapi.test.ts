import { readFile } from 'node:fs/promises';
import t from 'tap';
import { errorCodes } from '../../src/errors.ts';
import { generateOpenApi } from '../../src/http/openapi.ts';

const committedPath = new URL('../../openapi/gateway.json', import.meta.url);

t.test('openapi/gateway.json is what the zod schemas generate (run `npm run openapi` after a change)', async (t) => {
  t.equal(await readFile(committedPath, 'utf8'), await generateOpenApi());
});

t.test('the error codes in the document and in src/errors.ts are the same list', async (t) => {
  const document = JSON.parse(await readFile(committedPath, 'utf8')) as unknown;
  const published = new Set<string>();
  collectErrorCodeEnums(document, published);
  t.ok(published.size > 0, 'the document publishes error codes');
  t.same([...published].sort(), Object.keys(errorCodes).sort());
});

t.test('every operation documents its error responses', async (t) => {
  const document = JSON.parse(await readFile(committedPath, 'utf8')) as { paths: Record<string, Record<string, { responses: Record<string, unknown> }>> };
  for (const [path, operations] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(operations)) {
      if (path === '/health') continue;
      t.ok(Object.keys(operation.responses).some((status) => status.startsWith('4')), `${method.toUpperCase()} ${path} lists 4xx responses`);
    }
  }
});

/** Finds every `code` property schema with an enum, wherever the error envelope appears. */
function collectErrorCodeEnums(node: unknown, into: Set<string>): void {
  if (Array.isArray(node)) {
    for (const item of node) collectErrorCodeEnums(item, into);
    return;
  }
  if (node === null || typeof node !== 'object') return;
  const record = node as Record<string, unknown>;
  const code = (record['properties'] as Record<string, { enum?: string[] }> | undefined)?.['code'];
  if (code?.enum !== undefined && record['properties'] !== undefined && 'detail' in (record['properties'] as object)) {
    for (const value of code.enum) into.add(value);
  }
  for (const value of Object.values(record)) collectErrorCodeEnums(value, into);
}

t.test('the service serves the same document at /openapi.json', async (t) => {
  const { buildApp, defaultSettings } = await import('../../src/http/app.ts');
  const unused = new Proxy({}, { get: () => { throw new Error('not called'); } });
  const app = await buildApp({ ...(unused as object), settings: defaultSettings } as Parameters<typeof buildApp>[0]);
  t.teardown(() => app.close());
  const response = await app.inject({ method: 'GET', url: '/openapi.json' });
  t.equal(response.statusCode, 200);
  t.same(response.json(), JSON.parse(await readFile(committedPath, 'utf8')));
});
