import type { ChildProcess } from 'node:child_process';

/** The benchmark's child processes (service, node, load generator): whether one has ended, and waiting for it to. */
export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Resolves true once the child has exited, or false after `withinMs`. */
export function exited(child: ChildProcess, withinMs: number): Promise<boolean> {
  if (hasExited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), withinMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}
