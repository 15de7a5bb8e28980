/**
 * npm run bench:audit [-- --quick] [-- --portable]
 *
 * Builds a log of 200,000 accepted receipts (12,000 with --quick) — paid jobs as the gateway
 * records them, with real Ed25519 receipts by 8 node keys, the ledger's countersignatures,
 * transparency leaves and a signed checkpoint every 1,000 leaves, and one failed job in twenty —
 * in a throwaway embedded PostgreSQL (not timed). Then it times `exportLedger` to a file and the
 * offline audit of that file (`b3iq audit FILE`: chain, receipts, signatures, leaves, checkpoints,
 * money), which must pass, and the inclusion-proof time at 1,000,000 leaves. With --portable the
 * audit runs on @noble/ed25519 and @noble/hashes instead of node:crypto. The last line is the
 * summary: audit_eps=<n> proof_ms=<p99 of inclusion proof generation, milliseconds>
 */
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import { portableAuditCrypto } from '../src/audit/auditCrypto.ts';
import { exportLedger } from '../src/audit/exportLedger.ts';
import { auditFile } from '../src/audit/fileSource.ts';
import { LedgerAudit } from '../src/audit/ledgerAudit.ts';
import { nodeAuditCrypto } from '../src/audit/nodeAuditCrypto.ts';
import { formatReport } from '../src/audit/summary.ts';
import { openLedgerDatabase, type LedgerDatabase } from '../src/db/ledgerDatabase.ts';
import { leafHash, MerkleTree } from '../src/transparency/merkle.ts';
import { verifyInclusionPortable } from '../src/transparency/portableMerkle.ts';
import { loadAuditFixture, type AuditFixtureSummary } from './auditFixture.ts';
import { formatCount, hasFlag, progress, withBenchPostgres, type BenchPostgres } from './support.ts';

const quick = hasFlag('--quick');
const portable = hasFlag('--portable');
const plan = { name: quick ? 'quick' : 'full', receipts: quick ? 12_000 : 200_000, customers: 1_000, nodes: 8, seed: 20_260_404, chunkSize: 5_000 };
const proofLeaves = 1_000_000;
const proofRuns = 10_000;

async function buildLog(ledger: LedgerDatabase): Promise<AuditFixtureSummary> {
  const startedAt = performance.now();
  let reported = 0;
  const summary = await loadAuditFixture(ledger.pool, {
    ...plan,
    onProgress(inserted, receipts) {
      if (receipts - reported < plan.receipts / 10) return;
      reported = receipts;
      progress(`fixture: ${inserted} events with ${receipts} of ${plan.receipts} receipts inserted`);
    },
  });
  await ledger.pool.query('VACUUM (ANALYZE) b3iq_events');
  const seconds = (performance.now() - startedAt) / 1000;
  console.log(`fixture: ${summary.events} events, ${summary.receipts} receipts, ${summary.checkpoints} checkpoints inserted in ${seconds.toFixed(1)} s (not timed)`);
  return summary;
}

async function timedExport(ledger: LedgerDatabase, path: string, summary: AuditFixtureSummary): Promise<number> {
  const startedAt = performance.now();
  const out = createWriteStream(path);
  const result = await exportLedger(ledger.pool, out, {
    ledgerPublicKey: summary.ledger.publicKeyBase64url,
    now: new Date(),
    onProgress: (exported) => {
      if (exported % 200_000 < 2_000) progress(`export: ${exported} of ${summary.events} events`);
    },
  });
  out.end();
  await finished(out);
  const seconds = (performance.now() - startedAt) / 1000;
  if (result.events !== summary.events) throw new Error(`exported ${result.events} of ${summary.events} events`);
  const megabytes = (await stat(path)).size / 1_048_576;
  console.log(`export: ${result.events} events, ${megabytes.toFixed(0)} MiB in ${seconds.toFixed(2)} s = ${formatCount(result.events / seconds)} events/s`);
  return seconds;
}

/** The audit must pass and find every receipt and checkpoint the fixture wrote: fast and wrong fails. */
async function timedAudit(path: string, summary: AuditFixtureSummary): Promise<number> {
  const audit = new LedgerAudit({ crypto: portable ? portableAuditCrypto : nodeAuditCrypto, trustedLedgerKey: summary.ledger.publicKeyBase64url });
  let peakRss = 0;
  let reported = 0;
  const cpuBefore = process.cpuUsage();
  const startedAt = performance.now();
  await auditFile(path, audit, (read, total) => {
    peakRss = Math.max(peakRss, process.memoryUsage.rss());
    if (read - reported < total / 10 && read < total) return;
    reported = read;
    const seconds = (performance.now() - startedAt) / 1000;
    progress(`audit: ${Math.round((100 * read) / total)}% of the file after ${seconds.toFixed(1)} s`);
  });
  const report = await audit.finish();
  const seconds = (performance.now() - startedAt) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  if (!report.ok) throw new Error(`the audit of a clean log failed:\n${formatReport(report)}`);
  const { summary: found } = report;
  if (found.events !== summary.events || found.receipts !== summary.receipts || found.leaves !== summary.receipts || found.checkpoints !== summary.checkpoints) {
    throw new Error(`the audit saw ${found.events} events, ${found.receipts} receipts, ${found.leaves} leaves, ${found.checkpoints} checkpoints`);
  }
  const signatures = 2 * found.receipts + found.checkpoints;
  console.log(
    `audit (${found.crypto}): ${found.events} events, ${found.receipts} receipts, ${signatures} signatures verified in ${seconds.toFixed(2)} s = ` +
      `${formatCount(found.events / seconds)} events/s, ${formatCount(found.receipts / seconds)} receipts/s; peak RSS ${(peakRss / 1_048_576).toFixed(0)} MiB`,
  );
  // On a shared machine the wall time depends on the neighbours; the CPU time of all threads does not.
  console.log(
    `audit CPU: ${cpuSeconds.toFixed(1)} s on all threads (${(cpuSeconds / seconds).toFixed(2)} cores busy on average) = ` +
      `${formatCount(found.events / cpuSeconds)} events per CPU-second; load ${loadavg()[0]!.toFixed(1)}`,
  );
  return seconds;
}

/** p99 of inclusion-proof generation over random leaves of a 1,000,000-leaf tree; a sample is verified. */
function proofTime(): number {
  const tree = new MerkleTree();
  const input = Buffer.alloc(8);
  for (let index = 0; index < proofLeaves; index++) {
    input.writeBigUInt64BE(BigInt(index));
    tree.append(leafHash(input));
  }
  const root = tree.root();
  const milliseconds: number[] = [];
  for (let run = 0; run < proofRuns; run++) {
    const index = Math.floor((run * 7_919 * 104_729) % proofLeaves);
    const startedAt = performance.now();
    const proof = tree.inclusionProof(index);
    milliseconds.push(performance.now() - startedAt);
    if (run % 100 === 0 && !verifyInclusionPortable(tree.leafHashAt(index), index, proofLeaves, proof, root)) {
      throw new Error(`the inclusion proof of leaf ${index} does not verify`);
    }
  }
  milliseconds.sort((left, right) => left - right);
  const p50 = milliseconds[Math.floor(0.5 * proofRuns)]!;
  const p99 = milliseconds[Math.floor(0.99 * proofRuns)]!;
  console.log(`inclusion proofs at ${proofLeaves} leaves: ${proofRuns} proofs, p50 ${p50.toFixed(4)} ms, p99 ${p99.toFixed(4)} ms (a sample of 100 verified with the portable verifier)`);
  return p99;
}

async function main(server: BenchPostgres): Promise<void> {
  console.log(
    `audit benchmark (${plan.name}): PostgreSQL ${server.serverVersion} (embedded), Node ${process.version}, ${plan.receipts} receipts ` +
      `by ${plan.nodes} node keys over ${plan.customers} customers, seed ${plan.seed}, load ${loadavg()[0]!.toFixed(1)}`,
  );
  const directory = await mkdtemp(join(tmpdir(), 'b3iq-bench-audit-'));
  const ledger = await openLedgerDatabase(await server.createDatabase(), { poolSize: 4 });
  let open = true;
  try {
    const summary = await buildLog(ledger);
    const path = join(directory, 'ledger.jsonl');
    await timedExport(ledger, path, summary);
    // The audit runs with no database at all, as an auditor's would.
    open = false;
    await ledger.close();
    const seconds = await timedAudit(path, summary);
    const p99 = proofTime();
    console.log(`load ${loadavg()[0]!.toFixed(1)} at the end`);
    console.log(`audit_eps=${formatCount(summary.events / seconds)} proof_ms=${p99.toFixed(4)}`);
  } finally {
    if (open) await ledger.close();
    await rm(directory, { recursive: true, force: true });
  }
}

await withBenchPostgres(main);
