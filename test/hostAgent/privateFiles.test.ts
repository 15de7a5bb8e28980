import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { JsonLinesFile, readLastLines, scanLines, writePrivateFileAtomically } from '../../src/hostAgent/privateFiles.ts';
import { temporaryDataDir } from './fixtures/agentHarness.ts';
import { mulberry32 } from '../support/random.ts';

/** The agent's small files: tail reads across chunk boundaries, torn lines, appends, modes. */

t.test('readLastLines equals the tail of a plain split, whatever the line sizes (64 KiB chunks)', async (t) => {
  const dataDir = await temporaryDataDir(t);
  const seed = Number(process.env['SEED'] ?? Date.now() % 1_000_000);
  t.comment(`seed ${seed}`);
  const random = mulberry32(seed);
  const lines = Array.from({ length: 40 }, (_, index) => `${index}:${'x'.repeat(Math.floor(random() ** 3 * 150_000))}`);
  const path = join(dataDir, 'lines.jsonl');
  await writeFile(path, `${lines.join('\n')}\n`);
  for (const wanted of [1, 2, 3, 7, 39, 40, 41, 1000]) {
    t.same(await readLastLines(path, wanted), lines.slice(-wanted), `last ${wanted} (seed ${seed})`);
  }
  await writeFile(path, `${lines.join('\n')}\n{"torn`);
  t.same(await readLastLines(path, 3), lines.slice(-3), 'a torn last line is not a line');
  t.same(await readLastLines(join(dataDir, 'missing'), 3), [], 'a missing file has no lines');
});

t.test('JsonLinesFile: 0600, appends in order, and after a torn line the next record starts on its own line', async (t) => {
  const dataDir = await temporaryDataDir(t);
  const path = join(dataDir, 'log.jsonl');
  await writeFile(path, '{"a":1}\n{"b":', { mode: 0o644 });
  const file = await JsonLinesFile.open(path);
  await Promise.all([file.append({ n: 1 }), file.append({ n: 2 }), file.append({ n: 3 })]);
  await file.close();
  t.equal((await stat(path)).mode & 0o777, 0o600, 'tightened to owner-only');
  t.equal(await readFile(path, 'utf8'), '{"a":1}\n{"b":\n{"n":1}\n{"n":2}\n{"n":3}\n');
  const seen: string[] = [];
  await scanLines(path, (line) => {
    seen.push(line);
    return line === '{"n":2}';
  });
  t.same(seen, ['{"a":1}', '{"b":', '{"n":1}', '{"n":2}'], 'scanLines stops when asked');
});

t.test('writePrivateFileAtomically replaces the file whole, owner-only', async (t) => {
  const dataDir = await temporaryDataDir(t);
  const path = join(dataDir, 'nested', 'file.json');
  await writePrivateFileAtomically(path, 'first');
  await writePrivateFileAtomically(path, 'second');
  t.equal(await readFile(path, 'utf8'), 'second');
  t.equal((await stat(path)).mode & 0o777, 0o600);
});
