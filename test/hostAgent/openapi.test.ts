import { readFile } from 'node:fs/promises';
import t from 'tap';
import { hostAgentErrorCodes } from '../../src/hostAgent/errors.ts';
import { generateHostAgentOpenApi } from '../../src/hostAgent/openapi.ts';
import { startAgentUnderTest } from './fixtures/agentHarness.ts';

/** openapi/host-agent.json is generated from the agent's route schemas, like openapi/gateway.json. */

const committedPath = new URL('../../openapi/host-agent.json', import.meta.url);

interface Document {
  paths: Record<string, Record<string, { security?: unknown[]; responses: Record<string, unknown> }>>;
}

t.test('openapi/host-agent.json is what the zod schemas generate (run `npm run openapi` after a change)', async (t) => {
  t.equal(await readFile(committedPath, 'utf8'), await generateHostAgentOpenApi());
});

t.test('it documents the six routes of the local API, each secured as it is served', async (t) => {
  const document = JSON.parse(await readFile(committedPath, 'utf8')) as Document;
  t.same(Object.keys(document.paths).sort(), ['/health', '/v1/chat/completions', '/v1/model-profiles', '/v1/models', '/v1/receipts', '/v1/receipts/submit']);
  const schemes = (path: string, method: string) => (document.paths[path]?.[method]?.security ?? []).flatMap((entry) => Object.keys(entry as object)).sort();
  t.same(schemes('/health', 'get'), []);
  t.same(schemes('/v1/chat/completions', 'post'), ['localKey', 'routerSignature']);
  t.same(schemes('/v1/models', 'get'), ['localKey', 'routerSignature', 'setupToken']);
  for (const [path, method] of [['/v1/model-profiles', 'get'], ['/v1/receipts', 'get'], ['/v1/receipts/submit', 'post']] as const) {
    t.same(schemes(path, method), ['setupToken'], `${method.toUpperCase()} ${path}`);
  }
  for (const [path, operations] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(operations)) {
      if (path === '/health') continue;
      t.ok(Object.keys(operation.responses).some((status) => status.startsWith('4')), `${method.toUpperCase()} ${path} lists 4xx responses`);
    }
  }
});

t.test('the error codes in the document and in src/hostAgent/errors.ts are the same list', async (t) => {
  const document = JSON.parse(await readFile(committedPath, 'utf8')) as unknown;
  const published = new Set<string>();
  collectErrorCodeEnums(document, published);
  t.same([...published].sort(), Object.keys(hostAgentErrorCodes).sort());
});

t.test('the agent serves the same document at /openapi.json, without a credential', async (t) => {
  const subject = await startAgentUnderTest(t);
  const response = await fetch(`${subject.agent.url}/openapi.json`);
  t.equal(response.status, 200);
  t.same(await response.json(), JSON.parse(await readFile(committedPath, 'utf8')));
});

/** Finds every `code` property schema with an enum, wherever an error envelope appears. */
function collectErrorCodeEnums(node: unknown, into: Set<string>): void {
  if (Array.isArray(node)) {
    for (const item of node) collectErrorCodeEnums(item, into);
    return;
  }
  if (node === null || typeof node !== 'object') return;
  const record = node as Record<string, unknown>;
  const code = (record['properties'] as Record<string, { enum?: string[] }> | undefined)?.['code'];
  if (code?.enum !== undefined) for (const value of code.enum) into.add(value);
  for (const value of Object.values(record)) collectErrorCodeEnums(value, into);
}
