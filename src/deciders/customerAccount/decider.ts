import { DomainError, invariant } from '../../errors.ts';
import { accounts, type CustomerAccountEvent, type Transfer } from '../../events/customerAccount.ts';
import { formatWei, maxWei, splitCost } from '../../money.ts';
import { assertNever, type Decider } from '../decider.ts';
import { recordSpend, settleSpend, spentInWindow, type SpendEntry } from './spend.ts';

/**
 * The customer account: prepaid funds and two-phase reservations (TigerBeetle's pending → post or
 * void). Money decisions come only from this state, which is folded from the account's events.
 */

export type CustomerAccountCommand =
  | { type: 'CreateCustomer'; customerId: string }
  | { type: 'Deposit'; customerId: string; reference: string; amountWei: bigint }
  | { type: 'Reserve'; customerId: string; jobId: string; amountWei: bigint; spendCap?: SpendCap }
  | { type: 'Capture'; customerId: string; jobId: string; costWei: bigint; nodeId: string; nodeShareBps: number }
  | { type: 'Release'; customerId: string; jobId: string; reason: string };

/** A gateway key's rolling cap, checked at the reserve step; `at` is the request's time. */
export interface SpendCap {
  keyId: string;
  limitWei: bigint;
  windowSeconds: number;
  at: Date;
}

export type CustomerAccountState =
  | { status: 'absent' }
  | {
      status: 'open';
      customerId: string;
      availableWei: bigint;
      reservedWei: bigint;
      /** Only reservations not yet resolved, so the state stays as small as the open work. */
      openReservations: ReadonlyMap<string, bigint>;
      /** Recent spend of capped gateway keys, for their rolling windows. */
      spend: readonly SpendEntry[];
    };

type OpenState = Extract<CustomerAccountState, { status: 'open' }>;

export function initialState(): CustomerAccountState {
  return { status: 'absent' };
}

export function decide(command: CustomerAccountCommand, state: CustomerAccountState): CustomerAccountEvent[] {
  switch (command.type) {
    case 'CreateCustomer':
      return createCustomer(command, state);
    case 'Deposit':
      return deposit(command, requireOpen(state, command.customerId));
    case 'Reserve':
      return reserve(command, requireOpen(state, command.customerId));
    case 'Capture':
      return capture(command, requireOpen(state, command.customerId));
    case 'Release':
      return release(command, requireOpen(state, command.customerId));
    default:
      return assertNever(command);
  }
}

function createCustomer(
  command: Extract<CustomerAccountCommand, { type: 'CreateCustomer' }>,
  state: CustomerAccountState,
): CustomerAccountEvent[] {
  if (state.status !== 'absent') throw new DomainError('customer_already_exists', `Customer ${command.customerId} already exists`);
  return [{ type: 'CustomerCreated', data: { customer_id: command.customerId } }];
}

function deposit(command: Extract<CustomerAccountCommand, { type: 'Deposit' }>, state: OpenState): CustomerAccountEvent[] {
  requirePositive(command.amountWei, 'amount_wei');
  // Bounding the balance bounds every later amount too (reserve ≤ available, capture ≤ reserved),
  // so no event of this account can hold an amount its schema and the balance tables refuse.
  if (state.availableWei + state.reservedWei + command.amountWei > maxWei) {
    throw new DomainError('invalid_amount', `A balance cannot exceed ${formatWei(maxWei)} wei`, 'amount_wei');
  }
  const transfers = [transfer(accounts.externalDeposits, accounts.customerAvailable(state.customerId), command.amountWei)];
  return [
    {
      type: 'FundsDeposited',
      data: { customer_id: state.customerId, reference: command.reference, amount_wei: formatWei(command.amountWei), transfers },
    },
  ];
}

function reserve(command: Extract<CustomerAccountCommand, { type: 'Reserve' }>, state: OpenState): CustomerAccountEvent[] {
  requirePositive(command.amountWei, 'amount_wei');
  if (state.openReservations.has(command.jobId)) {
    throw new DomainError('reservation_already_exists', `Job ${command.jobId} already holds a reservation`);
  }
  if (state.availableWei < command.amountWei) {
    throw new DomainError(
      'insufficient_balance',
      `Available balance ${formatWei(state.availableWei)} wei cannot cover ${formatWei(command.amountWei)} wei`,
    );
  }
  const cap = command.spendCap;
  if (cap !== undefined) {
    const spentWei = spentInWindow(state.spend, cap.keyId, cap.at.getTime(), cap.windowSeconds);
    if (spentWei + command.amountWei > cap.limitWei) {
      throw new DomainError(
        'gateway_spend_cap_exceeded',
        `The key spent ${formatWei(spentWei)} wei in its ${cap.windowSeconds} s window; ${formatWei(command.amountWei)} more exceeds its cap of ${formatWei(cap.limitWei)} wei`,
      );
    }
  }
  const customerId = state.customerId;
  const transfers = [transfer(accounts.customerAvailable(customerId), accounts.customerReserved(customerId), command.amountWei)];
  const data = { customer_id: customerId, job_id: command.jobId, amount_wei: formatWei(command.amountWei), transfers };
  if (cap === undefined) return [{ type: 'FundsReserved', data }];
  return [{ type: 'FundsReserved', data: { ...data, key_id: cap.keyId, reserved_at: cap.at.toISOString() } }];
}

function capture(command: Extract<CustomerAccountCommand, { type: 'Capture' }>, state: OpenState): CustomerAccountEvent[] {
  const reservedWei = requireOpenReservation(state, command.jobId);
  if (command.costWei < 0n || command.costWei > reservedWei) {
    throw new DomainError(
      'capture_exceeds_reservation',
      `Cost ${formatWei(command.costWei)} wei exceeds the reservation of ${formatWei(reservedWei)} wei`,
      'cost_wei',
    );
  }
  const { nodePayableWei, protocolFeeWei } = splitCost(command.costWei, command.nodeShareBps);
  const releasedWei = reservedWei - command.costWei;
  const reserved = accounts.customerReserved(state.customerId);
  const transfers = [
    transfer(reserved, accounts.nodePayable(command.nodeId), nodePayableWei),
    transfer(reserved, accounts.protocolFees, protocolFeeWei),
    transfer(reserved, accounts.customerAvailable(state.customerId), releasedWei),
  ].filter((entry) => entry.amount_wei !== '0');
  return [
    {
      type: 'ReservationCaptured',
      data: {
        customer_id: state.customerId,
        job_id: command.jobId,
        node_id: command.nodeId,
        reserved_wei: formatWei(reservedWei),
        cost_wei: formatWei(command.costWei),
        node_payable_wei: formatWei(nodePayableWei),
        protocol_fee_wei: formatWei(protocolFeeWei),
        released_wei: formatWei(releasedWei),
        transfers,
      },
    },
  ];
}

function release(command: Extract<CustomerAccountCommand, { type: 'Release' }>, state: OpenState): CustomerAccountEvent[] {
  const reservedWei = requireOpenReservation(state, command.jobId);
  const transfers = [transfer(accounts.customerReserved(state.customerId), accounts.customerAvailable(state.customerId), reservedWei)];
  return [
    {
      type: 'ReservationReleased',
      data: { customer_id: state.customerId, job_id: command.jobId, amount_wei: formatWei(reservedWei), reason: command.reason, transfers },
    },
  ];
}

/** Total: every event type changes the state, and nothing here throws on a well-formed log. */
export function evolve(state: CustomerAccountState, event: CustomerAccountEvent): CustomerAccountState {
  if (event.type === 'CustomerCreated') {
    return { status: 'open', customerId: event.data.customer_id, availableWei: 0n, reservedWei: 0n, openReservations: new Map(), spend: [] };
  }
  if (state.status !== 'open') return state;
  switch (event.type) {
    case 'FundsDeposited':
      return { ...state, availableWei: state.availableWei + BigInt(event.data.amount_wei) };
    case 'FundsReserved': {
      const amountWei = BigInt(event.data.amount_wei);
      const openReservations = new Map(state.openReservations).set(event.data.job_id, amountWei);
      const { key_id: keyId, reserved_at: reservedAt } = event.data;
      const spend =
        keyId === undefined || reservedAt === undefined
          ? state.spend
          : recordSpend(state.spend, { jobId: event.data.job_id, keyId, atMs: Date.parse(reservedAt), amountWei });
      return { ...state, availableWei: state.availableWei - amountWei, reservedWei: state.reservedWei + amountWei, openReservations, spend };
    }
    case 'ReservationCaptured':
      return resolveReservation(state, event.data.job_id, BigInt(event.data.reserved_wei), BigInt(event.data.released_wei), BigInt(event.data.cost_wei));
    case 'ReservationReleased':
      return resolveReservation(state, event.data.job_id, BigInt(event.data.amount_wei), BigInt(event.data.amount_wei), 0n);
    default:
      return assertNever(event);
  }
}

function resolveReservation(state: OpenState, jobId: string, reservedWei: bigint, returnedWei: bigint, costWei: bigint): OpenState {
  const openReservations = new Map(state.openReservations);
  openReservations.delete(jobId);
  return {
    ...state,
    availableWei: state.availableWei + returnedWei,
    reservedWei: state.reservedWei - reservedWei,
    openReservations,
    spend: settleSpend(state.spend, jobId, costWei),
  };
}

export const customerAccountDecider: Decider<CustomerAccountCommand, CustomerAccountEvent, CustomerAccountState> = {
  decide,
  evolve,
  initialState,
};

function requireOpen(state: CustomerAccountState, customerId: string): OpenState {
  if (state.status !== 'open') throw new DomainError('customer_not_found', `Customer ${customerId} does not exist`);
  return state;
}

function requireOpenReservation(state: OpenState, jobId: string): bigint {
  const reservedWei = state.openReservations.get(jobId);
  if (reservedWei === undefined) throw new DomainError('reservation_not_open', `Job ${jobId} has no open reservation`);
  return reservedWei;
}

function requirePositive(amountWei: bigint, param: string): void {
  if (amountWei <= 0n) throw new DomainError('invalid_amount', `${param} must be greater than zero`, param);
}

function transfer(from: string, to: string, amountWei: bigint): Transfer {
  invariant(amountWei >= 0n, 'transfers move non-negative amounts');
  return { from, to, amount_wei: formatWei(amountWei) };
}
