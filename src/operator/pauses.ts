import type { Kysely } from 'kysely';
import type { ProjectionTables } from '../../projections/tables.ts';
import { allPayouts, type PauseTargetKind } from '../events/trafficControl.ts';

export interface ActivePause {
  targetKind: PauseTargetKind;
  targetId: string;
  reason: string;
  since: Date;
}

/**
 * The active pauses, reloaded at most once per `refreshMs` (like the node directory) so a paid
 * request does not pay a query to learn that nothing is paused. A pause made through this process
 * invalidates it at once; one made through another process takes effect within `refreshMs`.
 */
export class PauseDirectory {
  private active = new Map<string, ActivePause>();
  private loadedAt = 0;
  private loading: Promise<void> | null = null;

  constructor(
    private readonly db: Kysely<ProjectionTables>,
    private readonly refreshMs = 1_000,
  ) {}

  /** The pause on this target, or null when its traffic flows. */
  async find(kind: PauseTargetKind, id: string, now: Date): Promise<ActivePause | null> {
    await this.refresh(now);
    return this.active.get(key(kind, id)) ?? null;
  }

  async payoutsPause(now: Date): Promise<ActivePause | null> {
    return this.find('payouts', allPayouts, now);
  }

  async list(now: Date): Promise<ActivePause[]> {
    await this.refresh(now);
    return [...this.active.values()];
  }

  invalidate(): void {
    this.loadedAt = 0;
  }

  private async refresh(now: Date): Promise<void> {
    if (now.getTime() - this.loadedAt < this.refreshMs) return;
    this.loading ??= this.load().finally(() => {
      this.loading = null;
    });
    await this.loading;
    this.loadedAt = now.getTime();
  }

  private async load(): Promise<void> {
    const rows = await this.db.selectFrom('traffic_pauses').select(['target_kind', 'target_id', 'reason', 'changed_at']).where('paused', '=', true).execute();
    this.active = new Map(
      rows.map((row) => [
        key(row.target_kind as PauseTargetKind, row.target_id),
        { targetKind: row.target_kind as PauseTargetKind, targetId: row.target_id, reason: row.reason, since: row.changed_at },
      ]),
    );
  }
}

function key(kind: PauseTargetKind, id: string): string {
  return `${kind}\n${id}`;
}
