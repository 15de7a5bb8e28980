import pg from 'pg';

/**
 * int8 arrives as a string by default; positions, versions and counts are bigint in this code base.
 * numeric (wei sums) stays a string and is converted with BigInt where it is read.
 */
pg.types.setTypeParser(pg.types.builtins.INT8, (text) => BigInt(text));

export interface PoolOptions {
  connectionString: string;
  max?: number;
  onError?: (error: Error) => void;
}

export function createPool(options: PoolOptions): pg.Pool {
  const pool = new pg.Pool({ connectionString: options.connectionString, max: options.max ?? 10 });
  // An idle client that receives a server shutdown emits 'error' on the pool; without a listener
  // that event would crash the process instead of surfacing on the next query.
  pool.on('error', (error) => options.onError?.(error));
  return pool;
}

export type Queryable = Pick<pg.Pool, 'query'> | pg.PoolClient;
