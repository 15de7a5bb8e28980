import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { AppDependencies } from '../app.ts';
import { healthResponse } from '../schemas.ts';

export function healthRoutes(dependencies: AppDependencies): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      '/health',
      { schema: { summary: 'Liveness, with the log head and how far the projections have read', response: { 200: healthResponse } } },
      async () => ({
        status: 'ok' as const,
        log_position: String(await dependencies.store.headPosition()),
        projection_position: String(dependencies.projections.position),
      }),
    );
  };
}
