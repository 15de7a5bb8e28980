/**
 * The GPU node of the gateway benchmark: a real host agent (enrolled, heartbeating, signing
 * receipts, appending to receipts.jsonl) in front of the scripted dev runtime, in one Node process
 * of its own. In production the node is another machine, so its CPU (the HTTP hop, Ed25519
 * signing, the receipt file) must not run on the gateway's event loop; here it still shares the
 * machine's cores, and bench/gateway.ts reports its CPU on a line of its own.
 *
 * Protocol with the parent: the parent writes one JSON line of configuration on the child's stdin
 * (nothing secret: the agent enrolls with its own fresh key and keeps the dispatch secret it is
 * given in its own 0700 data directory); the child answers with one JSON line on stdout once the
 * agent has enrolled and sent its first heartbeat. The child stops, and removes its data
 * directory, when its stdin closes (the parent called close() or died) or on SIGTERM or SIGINT.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { startDevRuntime, type DevRuntime } from '../src/devRuntime/server.ts';
import { startHostAgent, type StartedHostAgent } from '../src/hostAgent/agent.ts';
import { exited, hasExited } from './childProcess.ts';
import { processCpuSeconds } from './gatewayCpu.ts';

export interface GatewayNodeConfig {
  /** The gateway the agent enrolls with and heartbeats to. */
  controlPlaneUrl: string;
  /** The one model the dev runtime serves. */
  model: string;
  /** The dev runtime's pacing: before the first token and between tokens (0 answers at once). */
  firstTokenDelayMs: number;
  tokenDelayMs: number;
}

export interface GatewayNodeReady {
  /** The dev runtime, which the bare proxy forwards to as well, so both paths reach the same server. */
  runtimeUrl: string;
  agentUrl: string;
  nodeId: string;
}

export interface GatewayNode extends GatewayNodeReady {
  pid: number;
  /** CPU the node process has used since it started, in core-seconds (from /proc; 0 elsewhere). */
  cpuSeconds(): number;
  /** Closes the child's stdin and waits for it to exit; signals it if it does not. Safe to call twice. */
  close(): Promise<void>;
}

type NodeChild = ChildProcessByStdio<Writable, Readable, null>;

// Enrollment takes a second or two; the child also compiles its TypeScript on the way up.
const readyTimeoutMs = 60_000;
const exitGraceMs = 10_000;

/** Starts this script as the node in a Node process of its own and waits until the agent is enrolled. */
export async function startGatewayNode(config: GatewayNodeConfig): Promise<GatewayNode> {
  const script = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, ['--import', 'tsx', script, 'child'], { stdio: ['pipe', 'pipe', 'inherit'] });
  let closing: Promise<void> | null = null;
  const close = () => (closing ??= stopChild(child));
  try {
    const ready = await readyLine(child, JSON.stringify(config));
    const pid = child.pid;
    if (pid === undefined) throw new Error('Invariant violated: a node process that answered has a pid');
    return { ...ready, pid, cpuSeconds: () => processCpuSeconds(pid), close };
  } catch (error) {
    await close();
    throw error;
  }
}

/** Sends the configuration and resolves with the child's first stdout line; later lines go to stderr. */
function readyLine(child: NodeChild, config: string): Promise<GatewayNodeReady> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`the node was not ready within ${readyTimeoutMs} ms`)), readyTimeoutMs);
    const fail = (error: Error) => {
      clearTimeout(timer);
      reject(error);
    };
    const lines = createInterface({ input: child.stdout });
    lines.once('line', (line) => {
      clearTimeout(timer);
      child.off('exit', exitedEarly);
      lines.on('line', (later) => process.stderr.write(`[bench node] ${later}\n`));
      try {
        resolve(parseReady(line));
      } catch (error) {
        reject(error instanceof Error ? error : new Error(String(error)));
      }
    });
    const exitedEarly = (code: number | null, signal: NodeJS.Signals | null) => fail(new Error(`the node exited with ${signal ?? code} before it was ready`));
    child.once('exit', exitedEarly);
    child.once('error', fail);
    // A closed pipe (the child died at once) is reported by the exit handler.
    child.stdin.on('error', () => undefined);
    child.stdin.write(`${config}\n`);
  });
}

function parseReady(line: string): GatewayNodeReady {
  const value: unknown = JSON.parse(line);
  if (typeof value !== 'object' || value === null) throw new Error(`the node answered ${line}`);
  const { runtimeUrl, agentUrl, nodeId } = value as Record<string, unknown>;
  if (typeof runtimeUrl !== 'string' || typeof agentUrl !== 'string' || typeof nodeId !== 'string') throw new Error(`the node answered ${line}`);
  return { runtimeUrl, agentUrl, nodeId };
}

/** Closing stdin asks the node to stop; SIGTERM, then SIGKILL, if it has not within the grace period. */
async function stopChild(child: NodeChild): Promise<void> {
  if (hasExited(child)) return;
  child.stdin.end();
  if (await exited(child, exitGraceMs)) return;
  process.stderr.write('[bench node] did not stop after its stdin closed; sending SIGTERM\n');
  child.kill('SIGTERM');
  if (await exited(child, exitGraceMs)) return;
  child.kill('SIGKILL');
  await exited(child, exitGraceMs);
}

// ---- The child ----

function parseConfig(line: string): GatewayNodeConfig {
  const value: unknown = JSON.parse(line);
  if (typeof value !== 'object' || value === null) throw new Error('the node configuration must be a JSON object');
  const { controlPlaneUrl, model, firstTokenDelayMs, tokenDelayMs } = value as Record<string, unknown>;
  if (typeof controlPlaneUrl !== 'string' || typeof model !== 'string') throw new Error('the node configuration needs controlPlaneUrl and model');
  const delay = (ms: unknown, name: string) => {
    if (ms === undefined) return 0;
    if (typeof ms !== 'number' || !Number.isSafeInteger(ms) || ms < 0) throw new Error(`${name} must be a non-negative integer`);
    return ms;
  };
  return {
    controlPlaneUrl: new URL(controlPlaneUrl).href,
    model,
    firstTokenDelayMs: delay(firstTokenDelayMs, 'firstTokenDelayMs'),
    tokenDelayMs: delay(tokenDelayMs, 'tokenDelayMs'),
  };
}

interface RunningNode {
  dataDir: string | null;
  runtime: DevRuntime | null;
  agent: StartedHostAgent | null;
}

/** The benchmark's node: 16 tokens (at once unless paced), 256 requests in flight, heartbeats every second. */
async function startNode(config: GatewayNodeConfig, node: RunningNode): Promise<GatewayNodeReady> {
  node.dataDir = await mkdtemp(join(tmpdir(), 'b3iq-bench-node-'));
  node.runtime = await startDevRuntime({
    models: [config.model],
    completionTokens: 16,
    firstTokenDelayMs: config.firstTokenDelayMs,
    tokenDelayMs: config.tokenDelayMs,
  });
  node.agent = await startHostAgent({
    runtimeUrl: node.runtime.url,
    runtimeKind: 'openai',
    dataDir: node.dataDir,
    controlPlaneUrl: config.controlPlaneUrl,
    port: 0,
    heartbeatIntervalMs: 1_000,
    maxConcurrent: 256,
  });
  return { runtimeUrl: node.runtime.url, agentUrl: node.agent.url, nodeId: node.agent.nodeId };
}

async function stopNode(node: RunningNode): Promise<void> {
  await node.agent?.close();
  await node.runtime?.close();
  if (node.dataDir !== null) await rm(node.dataDir, { recursive: true, force: true });
}

function runChild(): void {
  const node: RunningNode = { dataDir: null, runtime: null, agent: null };
  let stopping = false;
  const stop = (code: number) => {
    if (stopping) return;
    stopping = true;
    // A node that hangs on the way down must not outlive the benchmark.
    setTimeout(() => process.exit(1), exitGraceMs / 2).unref();
    void stopNode(node).then(
      () => process.exit(code),
      () => process.exit(1),
    );
  };
  const lines = createInterface({ input: process.stdin });
  lines.once('line', (line) => {
    Promise.resolve(line)
      .then((text) => startNode(parseConfig(text), node))
      .then(
      (ready) => process.stdout.write(`${JSON.stringify(ready)}\n`),
      (error: unknown) => {
        process.stderr.write(`[bench node] ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
        stop(1);
      },
    );
  });
  lines.once('close', () => stop(0));
  process.once('SIGTERM', () => stop(0));
  process.once('SIGINT', () => stop(0));
}

// Runs as the child only when started so; importing this file (for startGatewayNode) runs nothing.
if (process.argv[2] === 'child' && process.argv[1] === fileURLToPath(import.meta.url)) runChild();
