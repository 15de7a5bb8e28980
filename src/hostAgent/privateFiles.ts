import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';

/**
 * The agent's small files in its data directory: every one is owner-only (0600), whole files are
 * replaced atomically, and logs are appended one JSON line at a time.
 */

/** Writes a private temporary file and renames it over `path`, so readers never see half of it. */
export async function writePrivateFileAtomically(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temporaryPath = `${path}.${randomBytes(8).toString('hex')}.tmp`;
  const handle = await open(temporaryPath, 'wx', 0o600);
  try {
    await handle.chmod(0o600);
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await rename(temporaryPath, path);
  } catch (error) {
    await unlink(temporaryPath).catch(() => undefined);
    throw error;
  }
}

/**
 * An append-only JSON Lines file of mode 0600. Appends are chained so that lines never interleave.
 * A line torn by a crash (no final newline) is left as it is and the next line starts on its own.
 */
export class JsonLinesFile {
  readonly #file: FileHandle;
  #tail: Promise<void> = Promise.resolve();
  #needsNewline: boolean;

  private constructor(file: FileHandle, needsNewline: boolean) {
    this.#file = file;
    this.#needsNewline = needsNewline;
  }

  static async open(path: string): Promise<JsonLinesFile> {
    const file = await open(path, 'a+', 0o600);
    try {
      await file.chmod(0o600);
      const { size } = await file.stat();
      let needsNewline = false;
      if (size > 0) {
        const last = Buffer.alloc(1);
        await file.read(last, 0, 1, size - 1);
        needsNewline = last[0] !== 0x0a;
      }
      return new JsonLinesFile(file, needsNewline);
    } catch (error) {
      await file.close();
      throw error;
    }
  }

  /** Resolves once the line is written; rejects when the write fails. */
  append(value: unknown): Promise<void> {
    const line = `${this.#needsNewline ? '\n' : ''}${JSON.stringify(value)}\n`;
    this.#needsNewline = false;
    const written = this.#tail.then(() => this.#file.appendFile(line));
    this.#tail = written.catch(() => undefined);
    return written;
  }

  async close(): Promise<void> {
    await this.#tail;
    await this.#file.close();
  }
}

const tailChunkBytes = 65_536;

/**
 * The last `maxLines` complete lines of a file, oldest first, read backwards from its end so that
 * a long history costs no more to open than a short one. A missing file has no lines.
 */
export async function readLastLines(path: string, maxLines: number): Promise<string[]> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  try {
    const { size } = await handle.stat();
    const chunks: Buffer[] = [];
    let newlines = 0;
    let position = size;
    // One newline more than the lines wanted marks where the first wanted line starts.
    while (position > 0 && newlines <= maxLines) {
      const length = Math.min(tailChunkBytes, position);
      position -= length;
      const chunk = Buffer.alloc(length);
      await handle.read(chunk, 0, length, position);
      for (const byte of chunk) if (byte === 0x0a) newlines += 1;
      chunks.unshift(chunk);
    }
    const lines = Buffer.concat(chunks).toString('utf8').split('\n');
    // The text after the last newline is empty or a torn line; either way it is not a record.
    lines.pop();
    if (position > 0) lines.shift();
    return lines.slice(-maxLines).filter((line) => line !== '');
  } finally {
    await handle.close();
  }
}

/** Calls `visit` with every complete line from the start; stops early when it returns true. */
export async function scanLines(path: string, visit: (line: string) => boolean): Promise<void> {
  const stream = createReadStream(path, { encoding: 'utf8' });
  const lines = createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY });
  try {
    for await (const line of lines) {
      if (line !== '' && visit(line)) break;
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  } finally {
    lines.close();
    stream.destroy();
  }
}
