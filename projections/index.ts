import { customerBalancesProjection } from './customerBalances.ts';
import { gatewayKeysProjection } from './gatewayKeys.ts';
import { jobsProjection } from './jobs.ts';
import { nodesProjection } from './nodes.ts';
import { ledgerAccountsProjection } from './ledgerAccounts.ts';
import { ledgerEntriesProjection } from './ledgerEntries.ts';
import type { Projection } from './projection.ts';

/** Every read model the service maintains, in the order they are applied within a batch. */
export const allProjections: readonly Projection[] = [
  customerBalancesProjection,
  ledgerAccountsProjection,
  ledgerEntriesProjection,
  gatewayKeysProjection,
  nodesProjection,
  jobsProjection,
];
