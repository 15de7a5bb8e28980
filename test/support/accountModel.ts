import type { CustomerAccountCommand, CustomerAccountState } from '../../src/deciders/customerAccount/decider.ts';
import { accounts } from '../../src/events/customerAccount.ts';
import type { JsonObject } from '../../src/eventStore/port.ts';

/**
 * Two small reference models of the money rules, written without the decider, so the property
 * test can hold the real system against them.
 *
 * `Books` is the sequential model: it replays the commands whose events the log holds, in log
 * order, and refuses any that the rules forbid at that point (a reservation the available balance
 * could not cover, a second resolution). `sumOfOutcomes` is simpler still: it only adds up what
 * succeeded, which needs no order at all.
 */
export interface Balances {
  availableWei: bigint;
  reservedWei: bigint;
  openJobs: string[];
}

interface ModelAccount {
  availableWei: bigint;
  reservedWei: bigint;
  openJobs: Map<string, bigint>;
  reservedEver: Set<string>;
  references: Set<string>;
}

export class Books {
  readonly customers = new Map<string, ModelAccount>();
  readonly ledger = new Map<string, bigint>();

  /** Applies a command the log says succeeded; returns the rule it breaks, or null. */
  apply(command: CustomerAccountCommand): string | null {
    const account = this.customers.get(command.customerId);
    if (command.type === 'CreateCustomer') {
      if (account !== undefined) return `customer ${command.customerId} created twice`;
      this.customers.set(command.customerId, {
        availableWei: 0n,
        reservedWei: 0n,
        openJobs: new Map(),
        reservedEver: new Set(),
        references: new Set(),
      });
      return null;
    }
    if (account === undefined) return `${command.type} for absent customer ${command.customerId}`;
    const available = accounts.customerAvailable(command.customerId);
    const reserved = accounts.customerReserved(command.customerId);
    switch (command.type) {
      case 'Deposit':
        if (account.references.has(command.reference)) return `deposit reference ${command.reference} credited twice`;
        account.references.add(command.reference);
        account.availableWei += command.amountWei;
        this.move(accounts.externalDeposits, available, command.amountWei);
        return null;
      case 'Reserve':
        if (account.reservedEver.has(command.jobId)) return `job ${command.jobId} reserved twice`;
        if (account.availableWei < command.amountWei) {
          return `job ${command.jobId} reserved ${command.amountWei} with ${account.availableWei} available`;
        }
        account.reservedEver.add(command.jobId);
        account.openJobs.set(command.jobId, command.amountWei);
        account.availableWei -= command.amountWei;
        account.reservedWei += command.amountWei;
        this.move(available, reserved, command.amountWei);
        return null;
      case 'Capture':
      case 'Release': {
        const reservedWei = account.openJobs.get(command.jobId);
        if (reservedWei === undefined) return `job ${command.jobId} resolved without an open reservation`;
        const costWei = command.type === 'Capture' ? command.costWei : 0n;
        if (costWei > reservedWei) return `job ${command.jobId} captured ${costWei} of ${reservedWei}`;
        account.openJobs.delete(command.jobId);
        account.reservedWei -= reservedWei;
        account.availableWei += reservedWei - costWei;
        if (command.type === 'Capture') {
          const nodeWei = (costWei * BigInt(command.nodeShareBps)) / 10_000n;
          this.move(reserved, accounts.nodePayable(command.nodeId), nodeWei);
          this.move(reserved, accounts.protocolFees, costWei - nodeWei);
        }
        this.move(reserved, available, reservedWei - costWei);
        return null;
      }
    }
  }

  balances(): Map<string, Balances> {
    return new Map(
      [...this.customers].map(([customerId, account]) => [
        customerId,
        { availableWei: account.availableWei, reservedWei: account.reservedWei, openJobs: [...account.openJobs.keys()].sort() },
      ]),
    );
  }

  private move(from: string, to: string, amountWei: bigint): void {
    if (amountWei === 0n) return;
    this.ledger.set(from, (this.ledger.get(from) ?? 0n) - amountWei);
    this.ledger.set(to, (this.ledger.get(to) ?? 0n) + amountWei);
  }
}

/**
 * Available and reserved per customer from the commands that appended alone: deposits add,
 * reservations move, resolutions return what the job held less its cost. Addition commutes, so
 * however the workers interleaved, this is what the final balances must be.
 */
export function sumOfOutcomes(appended: readonly CustomerAccountCommand[]): Map<string, { availableWei: bigint; reservedWei: bigint }> {
  const sums = new Map<string, { availableWei: bigint; reservedWei: bigint }>();
  const jobAmounts = new Map<string, bigint>();
  for (const command of appended) {
    if (command.type === 'Reserve') jobAmounts.set(`${command.customerId}/${command.jobId}`, command.amountWei);
  }
  for (const command of appended) {
    const sum = sums.get(command.customerId) ?? { availableWei: 0n, reservedWei: 0n };
    sums.set(command.customerId, sum);
    if (command.type === 'Deposit') sum.availableWei += command.amountWei;
    if (command.type === 'Reserve') {
      sum.availableWei -= command.amountWei;
      sum.reservedWei += command.amountWei;
    }
    if (command.type === 'Capture' || command.type === 'Release') {
      const heldWei = jobAmounts.get(`${command.customerId}/${command.jobId}`) ?? 0n;
      sum.reservedWei -= heldWei;
      sum.availableWei += heldWei - (command.type === 'Capture' ? command.costWei : 0n);
    }
  }
  return sums;
}

export function balancesOf(state: CustomerAccountState): Balances | null {
  if (state.status !== 'open') return null;
  return { availableWei: state.availableWei, reservedWei: state.reservedWei, openJobs: [...state.openReservations.keys()].sort() };
}

/** The net movement of each account from the transfers one stored event carries. */
export function transfersOf(data: JsonObject): Array<{ from: string; to: string; amountWei: bigint }> {
  const transfers = data['transfers'];
  if (!Array.isArray(transfers)) return [];
  return transfers.map((entry) => {
    const { from, to, amount_wei: amountWei } = entry as { from: string; to: string; amount_wei: string };
    return { from, to, amountWei: BigInt(amountWei) };
  });
}
