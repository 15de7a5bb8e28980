import type { FastifyInstance } from 'fastify';
import { buildApp, defaultSettings, type AppDependencies } from './app.ts';

/**
 * The OpenAPI document is generated from the routes' zod schemas, never written by hand. Building
 * it needs no database: no route runs, so the dependencies are never called.
 */
export async function generateOpenApi(): Promise<string> {
  const unused = new Proxy({}, { get: () => { throw new Error('OpenAPI generation must not call dependencies'); } });
  const app: FastifyInstance = await buildApp({
    ...(unused as Omit<AppDependencies, 'settings'>),
    settings: defaultSettings,
  } as AppDependencies);
  await app.ready();
  const document = app.swagger();
  await app.close();
  return `${JSON.stringify(document, null, 2)}\n`;
}
