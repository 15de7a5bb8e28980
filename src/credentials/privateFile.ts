import { open } from 'node:fs/promises';

/**
 * Reads a file that holds a secret: null when it does not exist; an error when it is not a small
 * regular file, or when its group or others may access it (such a secret may already be known to
 * someone else). Permissions are checked on the opened handle, so the file checked is the file read.
 */
export async function readPrivateFile(path: string, what: string, maxBytes = 1_048_576): Promise<Buffer | null> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile() || stats.size > maxBytes) throw new Error(`${what} is not a small regular file`);
    if (process.platform !== 'win32' && (stats.mode & 0o077) !== 0) {
      throw new Error(
        `${what} is accessible by group or others (mode ${(stats.mode & 0o777).toString(8)}); ` +
          `refusing to use it. Restrict it with: chmod 600 ${path}`,
      );
    }
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}
