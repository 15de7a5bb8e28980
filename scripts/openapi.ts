// Writes openapi/gateway.json and openapi/host-agent.json from the routes' zod schemas: `npm run openapi`.
import { writeFile } from 'node:fs/promises';
import { generateHostAgentOpenApi } from '../src/hostAgent/openapi.ts';
import { generateOpenApi } from '../src/http/openapi.ts';

await writeFile(new URL('../openapi/gateway.json', import.meta.url), await generateOpenApi());
await writeFile(new URL('../openapi/host-agent.json', import.meta.url), await generateHostAgentOpenApi());
