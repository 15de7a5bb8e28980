import { join } from 'node:path';
import { z } from 'zod';
import type { SignedReceipt } from '../receipts/receipt.ts';
import { errorCodeIn, postJson } from './controlPlane.ts';
import { HostAgentError } from './errors.ts';
import { errorCodeOf, type HttpClient } from './httpClient.ts';
import { endpoint } from './options.ts';
import { JsonLinesFile, scanLines } from './privateFiles.ts';

/**
 * `POST /v1/receipts/submit`: sends a stored signed receipt to the configured control plane at
 * `POST /v1/nodes/{node_id}/receipts` (docs/node-protocol.md, Local API) and remembers the
 * outcome in `receipt-submissions.jsonl` (0600), so that a second submit, also after a restart,
 * answers the same outcome without sending anything again.
 *
 * Only final answers are remembered: accepted (2xx), or rejected because the receipt itself is
 * refused (400, or 409 when the control plane holds another receipt for the job). Anything else —
 * no answer, 5xx, 401/403/404, 429 — is the control plane's trouble, not the receipt's: the agent
 * answers 502 and the operator may submit again.
 */

export interface SubmissionOutcome {
  status: 'accepted' | 'rejected';
  /** The control plane's error code for a rejection; null when accepted. */
  code: string | null;
  submitted_at: string;
}

const recordSchema = z.object({
  receipt_hash: z.string().regex(/^[0-9a-f]{64}$/),
  control_plane: z.string(),
  status: z.enum(['accepted', 'rejected']),
  code: z.string().max(100).nullable(),
  submitted_at: z.string(),
});

const fileName = 'receipt-submissions.jsonl';

export interface SubmitterParts {
  dataDir: string;
  client: HttpClient;
  /** Null when the agent runs without a control plane. */
  controlPlaneUrl: URL | null;
  nodeId: string;
  now: () => Date;
  onWriteError: (error: unknown) => void;
}

export class ReceiptSubmitter {
  readonly #parts: SubmitterParts;
  readonly #file: JsonLinesFile;
  /** Outcomes for the configured control plane; one submitted elsewhere does not count here. */
  readonly #outcomes: Map<string, SubmissionOutcome>;
  readonly #inFlight = new Map<string, Promise<SubmissionOutcome>>();

  private constructor(parts: SubmitterParts, file: JsonLinesFile, outcomes: Map<string, SubmissionOutcome>) {
    this.#parts = parts;
    this.#file = file;
    this.#outcomes = outcomes;
  }

  static async open(parts: SubmitterParts): Promise<ReceiptSubmitter> {
    const path = join(parts.dataDir, fileName);
    const file = await JsonLinesFile.open(path);
    const outcomes = new Map<string, SubmissionOutcome>();
    const controlPlane = parts.controlPlaneUrl?.href ?? null;
    await scanLines(path, (line) => {
      const record = parseRecord(line);
      if (record !== null && record.control_plane === controlPlane) {
        outcomes.set(record.receipt_hash, { status: record.status, code: record.code, submitted_at: record.submitted_at });
      }
      return false;
    });
    return new ReceiptSubmitter(parts, file, outcomes);
  }

  outcomeOf(receiptHash: string): SubmissionOutcome | null {
    return this.#outcomes.get(receiptHash) ?? null;
  }

  /** The remembered outcome (replayed), or the control plane's answer to one submission. */
  async submit(signed: SignedReceipt): Promise<{ outcome: SubmissionOutcome; replayed: boolean }> {
    const known = this.#outcomes.get(signed.receipt_hash);
    if (known !== undefined) return { outcome: known, replayed: true };
    const running = this.#inFlight.get(signed.receipt_hash);
    // A submit that arrives while the same receipt is on its way shares that one request.
    if (running !== undefined) return { outcome: await running, replayed: true };
    const sending = this.#send(signed).finally(() => this.#inFlight.delete(signed.receipt_hash));
    this.#inFlight.set(signed.receipt_hash, sending);
    return { outcome: await sending, replayed: false };
  }

  async #send(signed: SignedReceipt): Promise<SubmissionOutcome> {
    const { controlPlaneUrl, nodeId, client } = this.#parts;
    if (controlPlaneUrl === null) {
      throw new HostAgentError('control_plane_not_configured', 'This agent has no control plane; start it with --control-plane-url to submit receipts');
    }
    let answer: { status: number; json: unknown };
    try {
      answer = await postJson(client, endpoint(controlPlaneUrl, `/v1/nodes/${nodeId}/receipts`), signed);
    } catch (error) {
      throw new HostAgentError('control_plane_unavailable', `The control plane did not answer (${errorCodeOf(error)}); submit again later`);
    }
    const outcome = outcomeOf(answer, this.#parts.now());
    if (outcome === null) {
      const code = errorCodeIn(answer.json);
      throw new HostAgentError('control_plane_unavailable', `The control plane did not take the receipt (status ${answer.status}${code === undefined ? '' : `, ${code}`}); submit again later`);
    }
    this.#outcomes.set(signed.receipt_hash, outcome);
    const record = { receipt_hash: signed.receipt_hash, control_plane: controlPlaneUrl.href, ...outcome };
    await this.#file.append(record).catch(this.#parts.onWriteError);
    return outcome;
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.#inFlight.values());
    await this.#file.close();
  }
}

function outcomeOf(answer: { status: number; json: unknown }, now: Date): SubmissionOutcome | null {
  const submittedAt = now.toISOString();
  if (answer.status >= 200 && answer.status < 300) return { status: 'accepted', code: null, submitted_at: submittedAt };
  if (answer.status === 400 || answer.status === 409) {
    const code = errorCodeIn(answer.json);
    return { status: 'rejected', code: code === undefined ? null : code.slice(0, 100), submitted_at: submittedAt };
  }
  return null;
}

function parseRecord(line: string): z.infer<typeof recordSchema> | null {
  try {
    const parsed = recordSchema.safeParse(JSON.parse(line));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}
