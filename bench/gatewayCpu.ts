/**
 * Where the machine's CPU went during a phase, read from /proc: the whole machine (/proc/stat);
 * the service (`b3iq serve`, a child process, bench/gatewayService.ts) and the node (host agent
 * and dev runtime, another child, bench/gatewayNode.ts), each from its /proc/PID/stat, which
 * counts every thread of the process; this process, which runs the bare proxy and the
 * benchmark's bookkeeping (process.cpuUsage); and the benchmark's own PostgreSQL server (the
 * postmaster found by its data directory, and its children, including reaped ones). On a shared
 * two-core machine this is what tells a slow path from a starved one. The service's event loop
 * is in another process, where its utilization cannot be read; the CPU of the service's main
 * thread (/proc/PID/task/PID/stat), which runs that loop, stands in for it: it is the loop's busy
 * time less any time the thread waited for a core. Linux only; elsewhere the /proc figures read
 * as zero.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

const ticksPerSecond = 100;

/** The processes a phase's CPU is read for; this process is always one of them. */
export interface WatchedProcesses {
  gatewayPid: number;
  nodePid: number;
  postmaster: string | null;
}

export type CpuPart = 'gateway' | 'gatewayMainThread' | 'node' | 'proxy' | 'postgres';

export interface CpuSnapshot {
  at: number;
  machineBusyTicks: number;
  seconds: Record<CpuPart, number>;
}

export interface CpuUsage {
  /** Busy cores on the whole machine, averaged over the phase (2.0 = both cores of two). */
  machineCores: number;
  /** Busy cores per process, averaged over the phase. */
  cores: Record<CpuPart, number>;
  /** Core-seconds per process, for the cost of one request. */
  seconds: Record<CpuPart, number>;
}

function readOr(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

function machineBusyTicks(): number {
  const fields = readOr('/proc/stat').split('\n')[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return user + nice + system + irq + softirq + steal;
}

/**
 * ppid, own CPU (utime+stime) and reaped children's CPU (cutime+cstime) of one process, from
 * /proc/PID/stat (fields 4 and 14–17; the name in field 2 may contain spaces).
 */
function processStat(pid: string, path = `/proc/${pid}/stat`): { ppid: string; ticks: number; reapedTicks: number } | null {
  const text = readOr(path);
  const close = text.lastIndexOf(')');
  if (close === -1) return null;
  const fields = text.slice(close + 2).split(' ').map((field) => Number(field));
  return { ppid: String(fields[1] ?? ''), ticks: (fields[11] ?? 0) + (fields[12] ?? 0), reapedTicks: (fields[13] ?? 0) + (fields[14] ?? 0) };
}

/** CPU one process has used since it started, all its threads, in core-seconds; 0 when unreadable. */
export function processCpuSeconds(pid: number): number {
  return (processStat(String(pid))?.ticks ?? 0) / ticksPerSecond;
}

/** CPU of a process's main thread (the one running Node's event loop), in core-seconds; 0 when unreadable. */
function mainThreadCpuSeconds(pid: number): number {
  return (processStat(String(pid), `/proc/${pid}/task/${pid}/stat`)?.ticks ?? 0) / ticksPerSecond;
}

/** Finds the postmaster whose command line names `dataDirPrefix`; null when there is none. */
export function findPostmaster(dataDirPrefix: string): string | null {
  for (const pid of safeList('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const command = readOr(`/proc/${pid}/cmdline`).split('\0');
    if (command[0]?.endsWith('postgres') && command.some((argument) => argument.startsWith(dataDirPrefix))) return pid;
  }
  return null;
}

function safeList(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

function postgresTicks(postmaster: string | null): number {
  if (postmaster === null) return 0;
  // Backends that ended (a pool closes idle connections) count through the postmaster's reaped time.
  const own = processStat(postmaster);
  let total = (own?.ticks ?? 0) + (own?.reapedTicks ?? 0);
  for (const pid of safeList('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const stat = processStat(pid);
    if (stat?.ppid === postmaster) total += stat.ticks;
  }
  return total;
}

export function snapshotCpu(watched: WatchedProcesses): CpuSnapshot {
  const own = process.cpuUsage();
  return {
    at: performance.now(),
    machineBusyTicks: machineBusyTicks(),
    seconds: {
      gateway: processCpuSeconds(watched.gatewayPid),
      gatewayMainThread: mainThreadCpuSeconds(watched.gatewayPid),
      node: processCpuSeconds(watched.nodePid),
      proxy: (own.user + own.system) / 1e6,
      postgres: postgresTicks(watched.postmaster) / ticksPerSecond,
    },
  };
}

export function cpuBetween(before: CpuSnapshot, after: CpuSnapshot): CpuUsage {
  const elapsed = (after.at - before.at) / 1000;
  const used = (part: CpuPart) => after.seconds[part] - before.seconds[part];
  const seconds = { gateway: used('gateway'), gatewayMainThread: used('gatewayMainThread'), node: used('node'), proxy: used('proxy'), postgres: used('postgres') };
  const cores = {
    gateway: seconds.gateway / elapsed,
    gatewayMainThread: seconds.gatewayMainThread / elapsed,
    node: seconds.node / elapsed,
    proxy: seconds.proxy / elapsed,
    postgres: seconds.postgres / elapsed,
  };
  return { machineCores: (after.machineBusyTicks - before.machineBusyTicks) / ticksPerSecond / elapsed, cores, seconds };
}
