import { timingSafeEqual } from 'node:crypto';
import { mkdir, open, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { readPrivateFile } from '../credentials/privateFile.ts';
import { generateId, generateSecret, hashSecret } from '../credentials/secrets.ts';
import { writePrivateFileAtomically } from './privateFiles.ts';

/**
 * Local API keys (`b3iq_local_`): what an app on the operator's machine uses for the agent's
 * `/v1/models` and `/v1/chat/completions`. The file `local-keys.json` (0600) holds, per key, only
 * the SHA-256 of the secret, its scopes, id, optional name, creation and revocation times. The
 * secret itself is shown once by `b3iq host-agent keys create` and never stored.
 */

export const localKeyPrefix = 'b3iq_local_';
export const localKeyScopes = ['chat', 'models'] as const;
export type LocalKeyScope = (typeof localKeyScopes)[number];

/** A local key as operators see it: never the secret, never its hash. */
export interface LocalKeyView {
  key_id: string;
  name: string | null;
  scopes: LocalKeyScope[];
  status: 'active' | 'revoked';
  created_at: string;
  revoked_at: string | null;
}

const fileName = 'local-keys.json';
const fileVersion = 'b3iq-local-keys-v1';
const maxKeys = 1000;
const maxFileBytes = 1_048_576;
/** 32 random bytes as base64url are 43 characters; imported secrets must be at least as strong. */
export const localKeySecretPattern = /^b3iq_local_[A-Za-z0-9_-]{43,200}$/;
export const localKeyNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const keyIdPattern = /^lk_[0-9a-f]{24}$/;

const storedKeySchema = z.strictObject({
  key_id: z.string().regex(keyIdPattern),
  name: z.string().regex(localKeyNamePattern).nullable(),
  scopes: z.array(z.enum(localKeyScopes)).min(1),
  secret_sha256: z.string().regex(/^[0-9a-f]{64}$/),
  created_at: z.iso.datetime(),
  revoked_at: z.iso.datetime().nullable(),
});
type StoredKey = z.infer<typeof storedKeySchema>;

const keyFileSchema = z.strictObject({ version: z.literal(fileVersion), keys: z.array(storedKeySchema).max(maxKeys) });

export function localKeysPath(dataDir: string): string {
  return join(dataDir, fileName);
}

function view(key: StoredKey): LocalKeyView {
  return {
    key_id: key.key_id,
    name: key.name,
    scopes: key.scopes,
    status: key.revoked_at === null ? 'active' : 'revoked',
    created_at: key.created_at,
    revoked_at: key.revoked_at,
  };
}

/** The keys on disk; none when the file does not exist. A damaged or unsafe file is an error. */
async function readKeys(path: string): Promise<StoredKey[]> {
  const bytes = await readPrivateFile(path, fileName, maxFileBytes);
  if (bytes === null) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new Error(`${fileName} is not JSON`);
  }
  const result = keyFileSchema.safeParse(parsed);
  if (!result.success) throw new Error(`${fileName} does not hold local keys`);
  return result.data.keys;
}

async function writeKeys(path: string, keys: StoredKey[]): Promise<void> {
  await writePrivateFileAtomically(path, `${JSON.stringify({ version: fileVersion, keys }, null, 2)}\n`);
}

const lockWaitMs = 5_000;
const staleLockMs = 30_000;

/**
 * Serialises read-modify-write of the key file between processes (two `keys create` at once must
 * not lose one) with an exclusive lock file; a lock left by a crashed process expires.
 */
async function withFileLock<T>(path: string, work: () => Promise<T>): Promise<T> {
  const lockPath = `${path}.lock`;
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const deadline = Date.now() + lockWaitMs;
  for (;;) {
    try {
      const handle = await open(lockPath, 'wx', 0o600);
      await handle.close();
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const age = await stat(lockPath).then((stats) => Date.now() - stats.mtimeMs, () => 0);
      if (age > staleLockMs) await unlink(lockPath).catch(() => undefined);
      else if (Date.now() > deadline) throw new Error(`${fileName} is locked by another process (${lockPath})`);
      else await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
  try {
    return await work();
  } finally {
    await unlink(lockPath).catch(() => undefined);
  }
}

export interface CreateLocalKey {
  scopes: readonly LocalKeyScope[];
  name?: string | null;
  /** An existing secret to register instead of generating one (read from a file or stdin). */
  secret?: string;
  now: Date;
}

/** Key management on the data directory, as `b3iq host-agent keys` does it; the running agent sees changes at once. */
export class LocalKeyFile {
  readonly path: string;

  constructor(dataDir: string) {
    this.path = localKeysPath(dataDir);
  }

  async list(): Promise<LocalKeyView[]> {
    return (await readKeys(this.path)).map(view);
  }

  /** Returns the new key and its secret; the secret exists only in this return value. */
  async create(request: CreateLocalKey): Promise<{ key: LocalKeyView; secret: string }> {
    const scopes = [...new Set(request.scopes)].sort();
    if (scopes.length === 0 || !scopes.every((scope) => (localKeyScopes as readonly string[]).includes(scope))) {
      throw new RangeError(`scopes must be some of ${localKeyScopes.join(', ')}`);
    }
    const name = request.name ?? null;
    if (name !== null && !localKeyNamePattern.test(name)) throw new RangeError('name must be 1-64 letters, digits, dots, dashes or underscores');
    const secret = request.secret ?? generateSecret(localKeyPrefix);
    if (!localKeySecretPattern.test(secret)) throw new RangeError('a local key secret must be b3iq_local_ followed by at least 43 base64url characters');
    const secretSha256 = hashSecret(secret).toString('hex');
    return withFileLock(this.path, async () => {
      const keys = await readKeys(this.path);
      if (keys.length >= maxKeys) throw new RangeError(`at most ${maxKeys} local keys; revoked keys count too`);
      if (keys.some((key) => key.secret_sha256 === secretSha256)) throw new RangeError('this secret is already registered as a local key');
      const stored: StoredKey = {
        key_id: generateId('lk_'),
        name,
        scopes: scopes as LocalKeyScope[],
        secret_sha256: secretSha256,
        created_at: request.now.toISOString(),
        revoked_at: null,
      };
      await writeKeys(this.path, [...keys, stored]);
      return { key: view(stored), secret };
    });
  }

  /** Null for an unknown id; revoking a revoked key changes nothing and returns it. */
  async revoke(keyId: string, now: Date): Promise<LocalKeyView | null> {
    return withFileLock(this.path, async () => {
      const keys = await readKeys(this.path);
      const key = keys.find((candidate) => candidate.key_id === keyId);
      if (key === undefined) return null;
      if (key.revoked_at !== null) return view(key);
      const revoked = { ...key, revoked_at: now.toISOString() };
      await writeKeys(this.path, keys.map((candidate) => (candidate === key ? revoked : candidate)));
      return view(revoked);
    });
  }
}

export type LocalKeyCheck = { ok: true; keyId: string; scopes: readonly LocalKeyScope[] } | { ok: false };

interface LoadedKey {
  keyId: string;
  scopes: readonly LocalKeyScope[];
  hash: Buffer;
}

/**
 * The running agent's view of local-keys.json. It re-reads the file whenever it changed (one stat
 * per check), so `keys revoke` takes effect on the next request without a restart. A file that
 * cannot be read fails closed: no key is accepted until it is fixed.
 */
export class LocalKeyVerifier {
  readonly #path: string;
  readonly #onReadError: (error: unknown) => void;
  #keys: LoadedKey[] = [];
  #signature = '';
  #failing = false;

  constructor(dataDir: string, onReadError: (error: unknown) => void) {
    this.#path = localKeysPath(dataDir);
    this.#onReadError = onReadError;
  }

  /** Loads the file once; the agent calls it at start so that a damaged file stops the start. */
  async load(): Promise<void> {
    const signature = await this.#fileSignature();
    this.#keys = signature === 'absent' ? [] : activeKeys(await readKeys(this.#path));
    this.#signature = signature;
  }

  async check(secret: string): Promise<LocalKeyCheck> {
    await this.#refresh();
    if (!localKeySecretPattern.test(secret)) return { ok: false };
    const candidate = hashSecret(secret);
    let found: LoadedKey | null = null;
    // Every stored hash is compared, matched or not, so the time taken says nothing about which.
    for (const key of this.#keys) {
      if (timingSafeEqual(candidate, key.hash) && found === null) found = key;
    }
    return found === null ? { ok: false } : { ok: true, keyId: found.keyId, scopes: found.scopes };
  }

  async #refresh(): Promise<void> {
    try {
      const signature = await this.#fileSignature();
      if (signature === this.#signature) return;
      this.#keys = signature === 'absent' ? [] : activeKeys(await readKeys(this.#path));
      this.#signature = signature;
      this.#failing = false;
    } catch (error) {
      this.#keys = [];
      this.#signature = '';
      // Reported once per failure streak: every request retries, the log says it once.
      if (!this.#failing) this.#onReadError(error);
      this.#failing = true;
    }
  }

  /** Changes with every replacement of the file (a rename gives a new inode) and every write. */
  async #fileSignature(): Promise<string> {
    try {
      const stats = await stat(this.#path, { bigint: true });
      return `${stats.ino}:${stats.size}:${stats.mtimeNs}`;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
      throw error;
    }
  }
}

function activeKeys(keys: StoredKey[]): LoadedKey[] {
  return keys
    .filter((key) => key.revoked_at === null)
    .map((key) => ({ keyId: key.key_id, scopes: key.scopes, hash: Buffer.from(key.secret_sha256, 'hex') }));
}
