// Writes openapi/gateway.json from the routes' zod schemas: `npm run openapi`.
import { writeFile } from 'node:fs/promises';
import { generateOpenApi } from '../src/http/openapi.ts';

await writeFile(new URL('../openapi/gateway.json', import.meta.url), await generateOpenApi());
