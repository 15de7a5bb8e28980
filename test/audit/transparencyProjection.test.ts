import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import t from 'tap';
import { childEnv } from '../support/childEnv.ts';
import { ledgerIdentity } from '../support/testApp.ts';
import { auditTamperedCopy, buildAuditFixture } from './fixture.ts';

/**
 * `b3iq audit --database` compares the transparency projection (transparency_leaves,
 * transparency_checkpoints) with the leaves and checkpoints it recomputed from the log: a clean
 * database passes, and each changed, missing or extra row is named by its leaf index or tree size
 * with what the log says against what the row holds.
 */

const fixture = await buildAuditFixture();

const auditTampered = (tamper: (client: pg.Client) => Promise<unknown>) => auditTamperedCopy(fixture, tamper);

async function query<Row extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<Row[]> {
  const client = new pg.Client({ connectionString: fixture.databaseUrl });
  await client.connect();
  try {
    return (await client.query<Row>(text, values)).rows;
  } finally {
    await client.end();
  }
}

const leaves = await query<{ leaf_index: string; receipt_hash: string; leaf_hash: string; position: string }>(
  'SELECT leaf_index::text, receipt_hash, leaf_hash, position::text FROM transparency_leaves ORDER BY leaf_index',
);
const checkpoints = await query<{ tree_size: string; root_hash: string; position: string }>(
  'SELECT tree_size::text, root_hash, position::text FROM transparency_checkpoints ORDER BY tree_size',
);
const [projected] = await query<{ position: string }>("SELECT position::text FROM projection_checkpoints WHERE name = 'transparency'");
const forgedHash = 'ab'.repeat(32);

t.test('a clean database passes with its transparency tables compared row by row', async (t) => {
  t.equal(leaves.length, 7, 'the fixture logged seven receipts');
  t.ok(checkpoints.length >= 2, 'and published several checkpoints');
  const { report } = await auditTampered(async () => undefined);
  t.same(report.findings, []);
  t.ok(report.ok);
  t.equal(report.summary.leaves, leaves.length);
  t.equal(report.summary.checkpoints, checkpoints.length);
});

t.test('a leaf whose hash was changed in the table is named with both hashes', async (t) => {
  const leaf = leaves[3]!;
  const { report } = await auditTampered((client) => client.query('UPDATE transparency_leaves SET leaf_hash = $1 WHERE leaf_index = 3', [forgedHash]));
  t.notOk(report.ok);
  t.same(report.findings, [
    { where: 'projection', position: null, check: 'projection.transparency_leaves', expected: `leaf 3: leaf_hash ${leaf.leaf_hash}`, found: `leaf_hash ${forgedHash}` },
  ]);
});

t.test('a deleted checkpoint row is named by its tree size, root and position', async (t) => {
  const checkpoint = checkpoints[1]!;
  const { report } = await auditTampered((client) => client.query('DELETE FROM transparency_checkpoints WHERE tree_size = $1', [checkpoint.tree_size]));
  t.same(report.findings, [
    {
      where: 'projection',
      position: null,
      check: 'projection.transparency_checkpoints',
      expected: `tree size ${checkpoint.tree_size}: root_hash ${checkpoint.root_hash}, published at position ${checkpoint.position}`,
      found: 'no row',
    },
  ]);
});

t.test('a missing leaf, a leaf the log does not have and a checkpoint over another root are each listed', async (t) => {
  const last = checkpoints[checkpoints.length - 1]!;
  const { report } = await auditTampered(async (client) => {
    await client.query('DELETE FROM transparency_leaves WHERE leaf_index = 5');
    await client.query("INSERT INTO transparency_leaves VALUES (7, $1, $1, 1, 1)", [forgedHash]);
    await client.query('UPDATE transparency_checkpoints SET root_hash = $1 WHERE tree_size = $2', [forgedHash, last.tree_size]);
  });
  const leaf = leaves[5]!;
  t.same(
    report.findings.map((finding) => [finding.check, finding.expected, finding.found]),
    [
      ['projection.transparency_leaves', `leaf 5: receipt_hash ${leaf.receipt_hash}, leaf_hash ${leaf.leaf_hash}, logged at position ${leaf.position}`, 'no row'],
      ['projection.transparency_leaves', `no leaf 7: the log holds 7 leaves at position ${projected!.position}`, `receipt_hash ${forgedHash}`],
      ['projection.transparency_checkpoints', `tree size ${last.tree_size}: root_hash ${last.root_hash}`, `root_hash ${forgedHash}`],
    ],
  );
});

t.test('b3iq audit --database exits 1 and names the tampered transparency row first', async (t) => {
  const keyFile = join(fixture.directory, 'transparency-ledger-key.txt');
  await writeFile(keyFile, `${ledgerIdentity.publicKeyBase64url}\n`);
  const { url } = await auditTampered(async (client) => {
    await client.query('UPDATE transparency_leaves SET leaf_hash = $1 WHERE leaf_index = 3', [forgedHash]);
    await client.query('DELETE FROM transparency_checkpoints WHERE tree_size = $1', [checkpoints[1]!.tree_size]);
  });
  const b3iq = new URL('../../bin/b3iq.js', import.meta.url).pathname;
  const result = await new Promise<{ code: number; stdout: string }>((resolve) => {
    execFile(process.execPath, [b3iq, 'audit', '--database', url, '--ledger-key', keyFile], { env: childEnv(), timeout: 60_000 }, (error, stdout) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout });
    });
  });
  t.equal(result.code, 1, result.stdout);
  t.match(result.stdout, /^AUDIT FAILED: 2 findings\n/);
  t.match(result.stdout, `first failure: projection: projection.transparency_leaves: expected leaf 3: leaf_hash ${leaves[3]!.leaf_hash}; found leaf_hash ${forgedHash}\n`);
  t.match(result.stdout, `  projection: projection.transparency_checkpoints: expected tree size ${checkpoints[1]!.tree_size}: root_hash `);
});
