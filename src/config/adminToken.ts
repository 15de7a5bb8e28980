import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSecret, hashSecret, secretPrefixes } from '../credentials/secrets.ts';

export interface AdminToken {
  hash: Buffer;
  /** Where the token is; printed at start so an operator can find it. The token itself never is. */
  path: string;
  created: boolean;
}

/**
 * The admin token comes from B3IQ_ADMIN_TOKEN_FILE, or from DIR/admin-token, which is generated
 * (mode 0600) on the first start. Only its hash stays in memory.
 */
export async function loadAdminToken(dataDir: string, tokenFile: string | null): Promise<AdminToken> {
  if (tokenFile !== null) {
    const token = (await readFile(tokenFile, 'utf8')).trim();
    if (token.length < 16) throw new Error(`The admin token in ${tokenFile} must be at least 16 characters`);
    return { hash: hashSecret(token), path: tokenFile, created: false };
  }
  const path = join(dataDir, 'admin-token');
  if (existsSync(path)) return { hash: hashSecret((await readFile(path, 'utf8')).trim()), path, created: false };
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const token = generateSecret(secretPrefixes.adminToken);
  await writeFile(path, `${token}\n`, { mode: 0o600, flag: 'wx' });
  await chmod(path, 0o600);
  return { hash: hashSecret(token), path, created: true };
}
