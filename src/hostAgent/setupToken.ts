import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { readPrivateFile } from '../credentials/privateFile.ts';
import { generateSecret, hashSecret, secretMatches } from '../credentials/secrets.ts';

/**
 * The owner's setup token: the credential for the agent's operator routes (`/v1/model-profiles`,
 * `/v1/receipts`, `/v1/receipts/submit`), sent as `X-B3IQ-Setup-Token`. It is generated on the first
 * start into `DIR/setup-token` (0600), or read from a file the operator names. Only its SHA-256
 * stays in memory; the agent prints where it is, never what it is.
 */

export const setupTokenHeader = 'x-b3iq-setup-token';
export const setupTokenPrefix = 'b3iq_setup_';
const fileName = 'setup-token';
/** Tokens the operator chooses: printable ASCII without spaces, long enough to carry 128 bits. */
const tokenPattern = /^[\x21-\x7e]{32,512}$/;

export interface SetupToken {
  /** Where the token is; printed at start so that the owner can find it. */
  path: string;
  created: boolean;
  matches(candidate: string): boolean;
}

function tokenFrom(hash: Buffer, path: string, created: boolean): SetupToken {
  return { path, created, matches: (candidate) => secretMatches(candidate, hash) };
}

export async function loadSetupToken(dataDir: string, tokenFile: string | null): Promise<SetupToken> {
  if (tokenFile !== null) {
    const bytes = await readPrivateFile(tokenFile, 'the setup token file', 4096);
    if (bytes === null) throw new Error(`the setup token file ${tokenFile} does not exist`);
    return tokenFrom(hashSecret(validToken(bytes, tokenFile)), tokenFile, false);
  }
  const path = join(dataDir, fileName);
  const existing = await readPrivateFile(path, fileName, 4096);
  if (existing !== null) return tokenFrom(hashSecret(validToken(existing, path)), path, false);
  const token = generateSecret(setupTokenPrefix);
  let handle;
  try {
    handle = await open(path, 'wx', 0o600);
  } catch (error) {
    // Another process created it between our two steps: use that token, so both agree.
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    return loadSetupToken(dataDir, null);
  }
  try {
    await handle.chmod(0o600);
    await handle.writeFile(`${token}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return tokenFrom(hashSecret(token), path, true);
}

function validToken(bytes: Buffer, path: string): string {
  const token = bytes.toString('utf8').trim();
  if (!tokenPattern.test(token)) throw new Error(`the setup token in ${path} must be 32-512 printable characters without spaces`);
  return token;
}
