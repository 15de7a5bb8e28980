/**
 * Where the machine's CPU went during a phase: the whole machine (from /proc/stat), this process
 * (gateway, host agent, dev runtime and proxy share its one event loop) and the benchmark's own
 * PostgreSQL server (the postmaster found by its data directory, and its children). On a shared
 * two-core machine this is what tells a slow path from a starved one. Linux only; elsewhere the
 * machine and PostgreSQL figures read as zero.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { performance, type EventLoopUtilization } from 'node:perf_hooks';

const ticksPerSecond = 100;

export interface CpuSnapshot {
  at: number;
  eventLoop: EventLoopUtilization;
  machineBusyTicks: number;
  processMicros: number;
  postgresTicks: number;
}

export interface CpuUsage {
  /** Share of the phase this process's event loop was busy (1.0 = never idle). */
  eventLoopUtilization: number;
  /** Busy cores on the whole machine, averaged over the phase (2.0 = both cores of two). */
  machineCores: number;
  processCores: number;
  postgresCores: number;
  /** Core-seconds, for the cost of one request. */
  processSeconds: number;
  postgresSeconds: number;
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
function processStat(pid: string): { ppid: string; ticks: number; reapedTicks: number } | null {
  const text = readOr(`/proc/${pid}/stat`);
  const close = text.lastIndexOf(')');
  if (close === -1) return null;
  const fields = text.slice(close + 2).split(' ').map((field) => Number(field));
  return { ppid: String(fields[1] ?? ''), ticks: (fields[11] ?? 0) + (fields[12] ?? 0), reapedTicks: (fields[13] ?? 0) + (fields[14] ?? 0) };
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
  // Backends that ended (the pool closes idle connections) count through the postmaster's reaped time.
  const own = processStat(postmaster);
  let total = (own?.ticks ?? 0) + (own?.reapedTicks ?? 0);
  for (const pid of safeList('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const stat = processStat(pid);
    if (stat?.ppid === postmaster) total += stat.ticks;
  }
  return total;
}

export function snapshotCpu(postmaster: string | null): CpuSnapshot {
  const usage = process.cpuUsage();
  return { at: performance.now(), eventLoop: performance.eventLoopUtilization(), machineBusyTicks: machineBusyTicks(), processMicros: usage.user + usage.system, postgresTicks: postgresTicks(postmaster) };
}

export function cpuBetween(before: CpuSnapshot, after: CpuSnapshot): CpuUsage {
  const seconds = (after.at - before.at) / 1000;
  return {
    eventLoopUtilization: performance.eventLoopUtilization(after.eventLoop, before.eventLoop).utilization,
    machineCores: (after.machineBusyTicks - before.machineBusyTicks) / ticksPerSecond / seconds,
    processCores: (after.processMicros - before.processMicros) / 1e6 / seconds,
    postgresCores: (after.postgresTicks - before.postgresTicks) / ticksPerSecond / seconds,
    processSeconds: (after.processMicros - before.processMicros) / 1e6,
    postgresSeconds: (after.postgresTicks - before.postgresTicks) / ticksPerSecond,
  };
}
