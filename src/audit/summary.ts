import type { Finding } from './findings.ts';
import type { MoneyAudit, MoneyTotals } from './moneyAudit.ts';
import type { PayoutAudit, PayoutTotals } from './payoutAudit.ts';
import type { NodeTotals, ReceiptAudit, StatusTotals } from './receiptAudit.ts';
import type { TransparencyAudit } from './transparencyAudit.ts';

/** What the audit recomputed from the log: the numbers an auditor compares with what was published. */
export interface AuditSummary {
  crypto: string;
  events: number;
  headPosition: number;
  headHash: string;
  ledgerKeyId: string | null;
  eventTypes: Record<string, number>;
  customers: number;
  accounts: number;
  openReservations: number;
  money: MoneyTotals;
  customerAvailableWei: bigint;
  customerReservedWei: bigint;
  protocolFeesBalanceWei: bigint;
  externalDepositsBalanceWei: bigint;
  accountsSumWei: bigint;
  jobs: StatusTotals;
  nodes: Array<{ nodeId: string } & NodeTotals & { payableBalanceWei: bigint }>;
  receipts: number;
  capturedAwaitingReceipt: number;
  leaves: number;
  receiptsAwaitingLeaf: number;
  checkpoints: number;
  lastCheckpointTreeSize: number | null;
  payouts: PayoutTotals;
}

/** The recomputed state at one position, kept to compare with projections that stopped there. */
export interface StateSnapshot {
  accounts: Map<string, bigint>;
  customers: string[];
  jobTotals: StatusTotals;
  nodes: Map<string, NodeTotals>;
  receipts: number;
  /** How many leaves and checkpoints the log held there (their contents stay in the audit's record). */
  transparency: { leaves: number; checkpoints: number };
}

interface Parts {
  events: number;
  headPosition: number;
  headHash: string;
  types: Map<string, number>;
  money: MoneyAudit;
  receipts: ReceiptAudit;
  transparency: TransparencyAudit;
  payouts: PayoutAudit;
  ledgerKeyId: string | null;
  crypto: string;
}

export function summarise(parts: Parts): AuditSummary {
  const { money, receipts, transparency } = parts;
  let available = 0n;
  let reserved = 0n;
  let sum = 0n;
  for (const [account, balanceWei] of money.accounts) {
    sum += balanceWei;
    if (account.startsWith('customer:') && account.endsWith(':available')) available += balanceWei;
    if (account.startsWith('customer:') && account.endsWith(':reserved')) reserved += balanceWei;
  }
  let openReservations = 0;
  for (const customer of money.customers.values()) openReservations += customer.open.size;
  const nodes = [...receipts.nodes]
    .map(([nodeId, totals]) => ({ nodeId, ...totals, payableBalanceWei: money.accounts.get(`node:${nodeId}:payable`) ?? 0n }))
    .sort((left, right) => (left.nodeId < right.nodeId ? -1 : 1));
  return {
    crypto: parts.crypto,
    events: parts.events,
    headPosition: parts.headPosition,
    headHash: parts.headHash,
    ledgerKeyId: parts.ledgerKeyId,
    eventTypes: Object.fromEntries([...parts.types].sort(([left], [right]) => (left < right ? -1 : 1))),
    customers: money.customers.size,
    accounts: money.accounts.size,
    openReservations,
    money: { ...money.totals },
    customerAvailableWei: available,
    customerReservedWei: reserved,
    protocolFeesBalanceWei: money.accounts.get('protocol:fees') ?? 0n,
    externalDepositsBalanceWei: money.accounts.get('external:deposits') ?? 0n,
    accountsSumWei: sum,
    jobs: structuredClone(receipts.jobTotals),
    nodes,
    receipts: receipts.receipts,
    capturedAwaitingReceipt: receipts.capturedAwaitingReceipt,
    leaves: transparency.tree.size,
    receiptsAwaitingLeaf: transparency.unlogged,
    checkpoints: transparency.checkpoints,
    lastCheckpointTreeSize: transparency.lastCheckpoint?.treeSize ?? null,
    payouts: parts.payouts.totals,
  };
}

/** The report as text: the headline, the summary, and the first findings. */
export function formatReport(report: { ok: boolean; summary: AuditSummary; findings: Finding[]; findingCount: number }, shown = 20): string {
  const { summary: s } = report;
  const wei = (value: bigint) => `${value} wei`;
  const lines = [
    report.ok ? 'AUDIT PASSED' : `AUDIT FAILED: ${report.findingCount} finding${report.findingCount === 1 ? '' : 's'}`,
    ...(report.ok ? [] : [`first failure: ${describe(report.findings[0]!)}`]),
    '',
    `events            ${s.events} (head position ${s.headPosition}, head hash ${s.headHash})`,
    `verified with     ${s.crypto}; ledger key ${s.ledgerKeyId ?? 'none'}`,
    `event types       ${Object.entries(s.eventTypes).map(([type, count]) => `${type} ${count}`).join(', ')}`,
    `customers         ${s.customers}; accounts ${s.accounts}; open reservations ${s.openReservations}`,
    `deposits          ${wei(s.money.depositsWei)}`,
    `customer debits   ${wei(s.money.customerDebitsWei)} = node payouts ${wei(s.money.nodePayableWei)} + protocol fees ${wei(s.money.protocolFeesWei)} ` +
      `(${s.money.customerDebitsWei === s.money.nodePayableWei + s.money.protocolFeesWei ? 'holds' : 'DOES NOT HOLD'})`,
    `captures          ${s.money.captures}; releases ${s.money.releases}; returned to available ${wei(s.money.returnedWei)}`,
    `customer funds    available ${wei(s.customerAvailableWei)}, reserved ${wei(s.customerReservedWei)}`,
    `treasury          protocol:fees ${wei(s.protocolFeesBalanceWei)}, external:deposits ${wei(s.externalDepositsBalanceWei)}; all accounts sum to ${wei(s.accountsSumWei)}`,
    `jobs              ${(['reserved', 'captured', 'released'] as const).map((status) => `${status} ${s.jobs[status].count}`).join(', ')}; ` +
      `captured and awaiting their receipt ${s.capturedAwaitingReceipt}`,
    `receipts          ${s.receipts} accepted, ${s.leaves} logged as leaves, ${s.receiptsAwaitingLeaf} awaiting a leaf`,
    `checkpoints       ${s.checkpoints}${s.lastCheckpointTreeSize === null ? '' : `, largest tree size ${s.lastCheckpointTreeSize}`}`,
    `payout batches    ${Object.entries(s.payouts.batches).map(([status, count]) => `${status} ${count}`).join(', ')}; ` +
      `rows pending ${s.payouts.pendingRows}, in live batches ${s.payouts.rowsInLiveBatches}; settled ${wei(s.payouts.settledWei)}`,
    ...s.nodes.map(
      (node) =>
        `node ${node.nodeId}  receipts ${node.receipts}, debited ${wei(node.debitedWei)}, payout ${wei(node.payoutWei)}, ` +
        `accrued ${wei(node.accruedWei)}, payable balance ${wei(node.payableBalanceWei)}`,
    ),
  ];
  if (!report.ok) {
    lines.push('', `findings (first ${Math.min(shown, report.findings.length)} of ${report.findingCount}):`);
    for (const finding of report.findings.slice(0, shown)) lines.push(`  ${describe(finding)}`);
  }
  return `${lines.join('\n')}\n`;
}

export function describe(finding: Finding): string {
  const where = finding.where === 'event' ? `position ${finding.position}` : finding.where;
  return `${where}: ${finding.check}: expected ${finding.expected}; found ${finding.found}`;
}
