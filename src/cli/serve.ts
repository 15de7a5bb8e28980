import type { ServiceConfig } from '../config/config.ts';
import { startService } from '../service.ts';

/** Runs until SIGINT or SIGTERM, then closes HTTP, the projections and the database in order. */
export async function serve(config: ServiceConfig): Promise<number> {
  const service = await startService(config);
  service.app.log.info({ url: service.url, admin_token_file: service.adminTokenPath }, 'b3iq ledger listening');
  process.stderr.write(`b3iq ledger listening on ${service.url}\nadmin token file: ${service.adminTokenPath}\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await service.stop();
  return 0;
}
