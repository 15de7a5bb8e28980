import { createAgentApp, registerAgentRoutes, type AgentServices } from './routes.ts';

/**
 * The agent's OpenAPI document (openapi/host-agent.json), generated from its route schemas the
 * way src/http/openapi.ts generates the gateway's. No route runs, so no service is ever called.
 */
export async function generateHostAgentOpenApi(): Promise<string> {
  const unused = new Proxy({}, { get: () => { throw new Error('OpenAPI generation must not call the agent’s services'); } });
  const app = await createAgentApp({ logger: false });
  registerAgentRoutes(app, unused as AgentServices);
  await app.ready();
  const document = app.swagger();
  await app.close();
  return `${JSON.stringify(document, null, 2)}\n`;
}
