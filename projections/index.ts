import { customerBalancesProjection } from './customerBalances.ts';
import { gatewayKeysProjection } from './gatewayKeys.ts';
import { jobsProjection } from './jobs.ts';
import { nodesProjection } from './nodes.ts';
import { payoutsProjection } from './payouts.ts';
import { ledgerAccountsProjection } from './ledgerAccounts.ts';
import { ledgerEntriesProjection } from './ledgerEntries.ts';
import { privateJobsProjection } from './privateJobs.ts';
import type { Projection } from './projection.ts';
import { nodeReceiptsProjection } from './nodeReceipts.ts';
import { trafficPausesProjection } from './trafficPauses.ts';
import { transparencyProjection } from './transparency.ts';

/** Every read model the service maintains, in the order they are applied within a batch. */
export const allProjections: readonly Projection[] = [
  // The largest first: a rebuild replays two at a time in this order.
  ledgerEntriesProjection,
  customerBalancesProjection,
  ledgerAccountsProjection,
  gatewayKeysProjection,
  nodesProjection,
  jobsProjection,
  // After jobs: it sets receipts.batch_id on rows the jobs projection inserts.
  payoutsProjection,
  transparencyProjection,
  trafficPausesProjection,
  nodeReceiptsProjection,
  privateJobsProjection,
];
