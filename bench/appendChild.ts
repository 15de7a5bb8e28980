/**
 * One store's side of the append benchmark, in a process of its own. Emmett's PostgreSQL store
 * changes the global `pg` type parsers when it loads, and our pool installs its own int8 parser,
 * so the two stores never share a process. bench/append.ts starts this script once per store and
 * sends it one workload at a time over the IPC channel.
 *
 * Argument: the store, 'ours' or 'emmett'. Messages in: `{ connectionString, workload }`.
 * Messages out: `{ result }` (an AppendResult) or `{ error }`.
 */
import type { AppendResult, AppendWorkload } from './appendWorkload.ts';

export type Store = 'ours' | 'emmett';

export interface AppendRequest {
  connectionString: string;
  workload: AppendWorkload;
}

export type AppendReply = { result: AppendResult } | { error: string };

type Runner = (connectionString: string, workload: AppendWorkload) => Promise<AppendResult>;

/** Imported lazily, so only the chosen store's module (and its pg parsers) is ever loaded. */
async function loadRunner(store: Store): Promise<{ run: Runner; close: () => Promise<void> }> {
  if (store === 'ours') {
    const { runOurAppend } = await import('./ourAppend.ts');
    return { run: runOurAppend, close: async () => {} };
  }
  const { runEmmettAppend, closeEmmett } = await import('./emmettPeer.ts');
  return { run: runEmmettAppend, close: closeEmmett };
}

const store = process.argv[2];
if ((store !== 'ours' && store !== 'emmett') || process.send === undefined) {
  throw new Error('usage: started by bench/append.ts with an IPC channel and the argument ours|emmett');
}
const send = process.send.bind(process);
const runner = await loadRunner(store);
let queue: Promise<void> = Promise.resolve();

process.on('message', (message: AppendRequest) => {
  // One run at a time, in the order they were asked for.
  queue = queue.then(async () => {
    try {
      send({ result: await runner.run(message.connectionString, message.workload) } satisfies AppendReply);
    } catch (error) {
      send({ error: error instanceof Error ? (error.stack ?? error.message) : String(error) } satisfies AppendReply);
    }
  });
});
process.on('disconnect', () => {
  void queue.then(runner.close).finally(() => process.exit(0));
});
send({ ready: true });
