import { weiPattern } from './encoding.ts';
import { isRecord, readText, readWei, show, type EventContext } from './findings.ts';

/**
 * The money checks of the audit (DESIGN §3). Every event's `transfers` are applied to the
 * accounts exactly as the ledger_accounts projection applies them; the account events' own fields
 * must say the same thing as their transfers; customer and node accounts never go negative; a
 * reservation is made once and resolved at most once, for exactly its amount; a capture splits its
 * cost into node payable and protocol fee and returns the rest.
 *
 * A transfer moves one amount from one account to another, so the accounts sum to zero after every
 * event by construction of the format; what can break is checked instead: each transfer is a
 * positive wei amount between two named, distinct accounts, and it matches the event's fields.
 */

export interface Capture {
  customerId: string;
  reservedWei: bigint;
  costWei: bigint;
  nodePayableWei: bigint;
  protocolFeeWei: bigint;
  nodeId: string;
}

export interface MoneyListener {
  captured(jobId: string, capture: Capture): void;
  released(jobId: string): void;
}

export interface MoneyTotals {
  depositsWei: bigint;
  reservationsWei: bigint;
  /** What customers were charged: the captured cost of every job. */
  customerDebitsWei: bigint;
  nodePayableWei: bigint;
  protocolFeesWei: bigint;
  /** Reserved funds that went back to available, by capture (unused part) or release. */
  returnedWei: bigint;
  captures: number;
  releases: number;
}

interface Transfer {
  from: string;
  to: string;
  amountWei: bigint;
}

const customerAccount = /^customer:(.+):(available|reserved)$/;
const nonNegativeAccount = /^(customer:.+:(available|reserved)|node:.+:payable|protocol:fees)$/;

const accountName = {
  available: (customerId: string) => `customer:${customerId}:available`,
  reserved: (customerId: string) => `customer:${customerId}:reserved`,
  nodePayable: (nodeId: string) => `node:${nodeId}:payable`,
  protocolFees: 'protocol:fees',
  deposits: 'external:deposits',
};

export class MoneyAudit {
  readonly accounts = new Map<string, bigint>();
  /** Per customer: reservations still open, and the jobs whose reservation was resolved. */
  readonly customers = new Map<string, { open: Map<string, bigint>; resolved: Set<string> }>();
  readonly totals: MoneyTotals = {
    depositsWei: 0n, reservationsWei: 0n, customerDebitsWei: 0n, nodePayableWei: 0n, protocolFeesWei: 0n, returnedWei: 0n, captures: 0, releases: 0,
  };

  constructor(private readonly listener: MoneyListener) {}

  /** Applies any event's transfers, then checks the account events' meaning. */
  apply(context: EventContext): void {
    const transfers = this.applyTransfers(context);
    switch (context.type) {
      case 'CustomerCreated':
        return this.customerCreated(context, transfers);
      case 'FundsDeposited':
        return this.deposited(context, transfers);
      case 'FundsReserved':
        return this.reserved(context, transfers);
      case 'ReservationCaptured':
        return this.captured(context, transfers);
      case 'ReservationReleased':
        return this.released(context, transfers);
      default:
        return;
    }
  }

  /** Null when the event has no `transfers`; an unreadable transfer is reported and skipped. */
  private applyTransfers(context: EventContext): Transfer[] | null {
    const raw = context.data['transfers'];
    if (raw === undefined) return null;
    if (!Array.isArray(raw)) {
      context.fail('event.schema', `${context.type}.transfers as an array`, show(raw));
      return [];
    }
    const transfers: Transfer[] = [];
    for (const entry of raw as unknown[]) {
      const transfer = readTransfer(context, entry);
      if (transfer === null) continue;
      transfers.push(transfer);
      this.move(context, transfer.from, -transfer.amountWei);
      this.move(context, transfer.to, transfer.amountWei);
    }
    // The rule holds after each event, not between the transfers of one.
    const touched = new Set(transfers.flatMap((transfer) => [transfer.from, transfer.to]));
    for (const account of touched) {
      const balanceWei = this.accounts.get(account) ?? 0n;
      if (balanceWei < 0n && nonNegativeAccount.test(account)) context.fail('money.negative', `${account} ≥ 0`, show(balanceWei));
    }
    return transfers;
  }

  private move(context: EventContext, account: string, deltaWei: bigint): void {
    this.accounts.set(account, (this.accounts.get(account) ?? 0n) + deltaWei);
    const customer = customerAccount.exec(account);
    if (customer !== null && !this.customers.has(customer[1] as string)) {
      context.fail('money.account', `an account of a created customer`, account);
    }
  }

  private customerCreated(context: EventContext, transfers: Transfer[] | null): void {
    const customerId = readText(context, 'customer_id');
    if (customerId === undefined) return;
    if (transfers !== null) context.fail('money.transfers', 'no transfers', show(context.data['transfers']));
    if (this.customers.has(customerId)) context.fail('money.customer', `customer ${customerId} created once`, 'a second CustomerCreated');
    else this.customers.set(customerId, { open: new Map(), resolved: new Set() });
  }

  private deposited(context: EventContext, transfers: Transfer[] | null): void {
    const customerId = this.customerOf(context);
    const amountWei = readWei(context, 'amount_wei');
    if (customerId === undefined || amountWei === undefined) return;
    if (amountWei <= 0n) context.fail('money.amount', 'a positive deposit', show(amountWei));
    expectTransfers(context, transfers, [{ from: accountName.deposits, to: accountName.available(customerId), amountWei }]);
    this.totals.depositsWei += amountWei;
  }

  private reserved(context: EventContext, transfers: Transfer[] | null): void {
    const customerId = this.customerOf(context);
    const jobId = readText(context, 'job_id');
    const amountWei = readWei(context, 'amount_wei');
    if (customerId === undefined || jobId === undefined || amountWei === undefined) return;
    if (amountWei <= 0n) context.fail('money.amount', 'a positive reservation', show(amountWei));
    expectTransfers(context, transfers, [{ from: accountName.available(customerId), to: accountName.reserved(customerId), amountWei }]);
    const { open, resolved } = this.customers.get(customerId)!;
    if (open.has(jobId) || resolved.has(jobId)) {
      context.fail('money.reservation', `job ${jobId} reserved once`, 'a second reservation');
      return;
    }
    open.set(jobId, amountWei);
    this.totals.reservationsWei += amountWei;
  }

  private captured(context: EventContext, transfers: Transfer[] | null): void {
    const customerId = this.customerOf(context);
    const jobId = readText(context, 'job_id');
    const nodeId = readText(context, 'node_id');
    const [reservedWei, costWei, nodePayableWei, protocolFeeWei, releasedWei] = (
      ['reserved_wei', 'cost_wei', 'node_payable_wei', 'protocol_fee_wei', 'released_wei'] as const
    ).map((key) => readWei(context, key));
    if (customerId === undefined || jobId === undefined || nodeId === undefined) return;
    if (reservedWei === undefined || costWei === undefined || nodePayableWei === undefined) return;
    if (protocolFeeWei === undefined || releasedWei === undefined) return;
    this.resolve(context, customerId, jobId, reservedWei);
    if (costWei + releasedWei !== reservedWei) {
      context.fail('money.capture_split', `cost + released = reserved (${reservedWei})`, show(costWei + releasedWei));
    }
    if (nodePayableWei + protocolFeeWei !== costWei) {
      context.fail('money.capture_split', `node payable + protocol fee = cost (${costWei})`, show(nodePayableWei + protocolFeeWei));
    }
    const reserved = accountName.reserved(customerId);
    const expected = [
      { from: reserved, to: accountName.nodePayable(nodeId), amountWei: nodePayableWei },
      { from: reserved, to: accountName.protocolFees, amountWei: protocolFeeWei },
      { from: reserved, to: accountName.available(customerId), amountWei: releasedWei },
    ].filter((transfer) => transfer.amountWei !== 0n);
    expectTransfers(context, transfers, expected);
    Object.assign(this.totals, {
      customerDebitsWei: this.totals.customerDebitsWei + costWei,
      nodePayableWei: this.totals.nodePayableWei + nodePayableWei,
      protocolFeesWei: this.totals.protocolFeesWei + protocolFeeWei,
      returnedWei: this.totals.returnedWei + releasedWei,
      captures: this.totals.captures + 1,
    });
    this.listener.captured(jobId, { customerId, reservedWei, costWei, nodePayableWei, protocolFeeWei, nodeId });
  }

  private released(context: EventContext, transfers: Transfer[] | null): void {
    const customerId = this.customerOf(context);
    const jobId = readText(context, 'job_id');
    const amountWei = readWei(context, 'amount_wei');
    if (customerId === undefined || jobId === undefined || amountWei === undefined) return;
    this.resolve(context, customerId, jobId, amountWei);
    expectTransfers(context, transfers, [{ from: accountName.reserved(customerId), to: accountName.available(customerId), amountWei }]);
    this.totals.returnedWei += amountWei;
    this.totals.releases += 1;
    this.listener.released(jobId);
  }

  /** A resolution must find the job's reservation open, for the amount it claims; it closes it. */
  private resolve(context: EventContext, customerId: string, jobId: string, amountWei: bigint): void {
    const { open, resolved } = this.customers.get(customerId)!;
    const heldWei = open.get(jobId);
    if (heldWei === undefined) {
      const found = resolved.has(jobId) ? 'a reservation already resolved' : 'no reservation';
      context.fail('money.reservation', `an open reservation for job ${jobId}`, found);
      return;
    }
    if (heldWei !== amountWei) context.fail('money.reservation', `the reservation's ${heldWei} wei`, show(amountWei));
    open.delete(jobId);
    resolved.add(jobId);
  }

  private customerOf(context: EventContext): string | undefined {
    const customerId = readText(context, 'customer_id');
    if (customerId === undefined) return undefined;
    if (!this.customers.has(customerId)) {
      context.fail('money.customer', `customer ${customerId} created before its money moves`, 'no CustomerCreated');
      this.customers.set(customerId, { open: new Map(), resolved: new Set() });
    }
    if (context.streamName !== `customer-${customerId}`) context.fail('event.stream', `customer-${customerId}`, context.streamName);
    return customerId;
  }
}

function readTransfer(context: EventContext, entry: unknown): Transfer | null {
  if (!isRecord(entry)) {
    context.fail('event.schema', `${context.type}.transfers[] as {from, to, amount_wei}`, show(entry));
    return null;
  }
  const { from, to, amount_wei: amount } = entry;
  if (typeof from !== 'string' || typeof to !== 'string' || typeof amount !== 'string' || !weiPattern.test(amount) || Object.keys(entry).length !== 3) {
    context.fail('event.schema', `${context.type}.transfers[] as {from, to, amount_wei}`, show(entry));
    return null;
  }
  const amountWei = BigInt(amount);
  if (amountWei === 0n || from === to || from === '' || to === '') {
    context.fail('money.transfers', 'a positive amount between two distinct accounts', show(entry));
  }
  return { from, to, amountWei };
}

function transferKey(transfer: Transfer): string {
  return `${transfer.from} -> ${transfer.to}: ${transfer.amountWei}`;
}

/** The transfers must be exactly these, in any order. */
function expectTransfers(context: EventContext, found: Transfer[] | null, expected: Transfer[]): void {
  const foundKeys = (found ?? []).map(transferKey).sort();
  const expectedKeys = expected.map(transferKey).sort();
  if (found === null || foundKeys.join('\n') !== expectedKeys.join('\n')) {
    context.fail('money.transfers', `[${expectedKeys.join('; ')}]`, found === null ? 'no transfers' : `[${foundKeys.join('; ')}]`);
  }
}
