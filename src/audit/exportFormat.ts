import { counterPattern, keyIdPattern, publicKeyPattern, sha256HexPattern, utf8Decoder } from './encoding.ts';

/**
 * The export file, `b3iq-ledger-export-v1`: JSON Lines, UTF-8, one record per line.
 *
 *   {"record":"header","format":"b3iq-ledger-export-v1","exported_at":…,"head_position":"N",
 *    "ledger_public_key":<base64url>,"ledger_key_id":"ed25519:…"}
 *   {"hash":"<64 hex>","event":<the event's canonical bytes>}          one line per event, in order
 *   {"record":"trailer","event_count":"N","head_position":"N","head_hash":"<64 hex>"}
 *
 * An event line carries, after `"event":`, exactly the bytes the hash chain covers (RFC 8785 JSON
 * of position, event_id, stream_name, stream_version, type, data, metadata, recorded_at; see
 * src/eventStore/hashChain.ts), so a link is checked as sha256(previous hash ‖ those bytes) with no
 * re-serialisation, by this code or by a shell one-liner. Receipts' exact signed bytes are inside
 * the ReceiptAccepted data (`receipt_canonical`), checkpoints' exact notes inside
 * CheckpointPublished, node keys inside NodeEnrolled; the header names the ledger's key.
 *
 * This file and the rest of the audit core run without node:* or Buffer.
 */
export const exportFormat = 'b3iq-ledger-export-v1';

export interface ExportHeader {
  record: 'header';
  format: typeof exportFormat;
  exported_at: string;
  head_position: string;
  ledger_public_key: string;
  ledger_key_id: string;
}

export interface ExportTrailer {
  record: 'trailer';
  event_count: string;
  head_position: string;
  head_hash: string;
}

/** The chained fields of an event as the canonical bytes hold them. */
export interface CanonicalEvent {
  position: string;
  event_id: string;
  stream_name: string;
  stream_version: string;
  type: string;
  data: Record<string, unknown>;
  metadata: Record<string, unknown>;
  recorded_at: string;
}

export const eventLinePrefix = '{"hash":"';
export const eventLineMiddle = '","event":';
const eventBytesStart = eventLinePrefix.length + 64 + eventLineMiddle.length;
const prefixBytes = new TextEncoder().encode(eventLinePrefix);
const middleBytes = new TextEncoder().encode(eventLineMiddle);
const closingBrace = 0x7d;
/** Hex digits are ASCII; any other byte decodes to a character the pattern refuses. */
const latin1Decoder = new TextDecoder('latin1');

export type ExportLine =
  | { kind: 'event'; hash: string; bytes: Uint8Array }
  | { kind: 'header'; header: Record<string, unknown> }
  | { kind: 'trailer'; trailer: Record<string, unknown> }
  | { kind: 'malformed'; reason: string };

export function formatEventLine(hash: string, canonicalEventBytes: string): string {
  return `${eventLinePrefix}${hash}${eventLineMiddle}${canonicalEventBytes}}\n`;
}

function startsWith(line: Uint8Array, bytes: Uint8Array, at: number): boolean {
  if (line.length < at + bytes.length) return false;
  for (let index = 0; index < bytes.length; index++) if (line[at + index] !== bytes[index]) return false;
  return true;
}

/** Classifies one line (without its newline). Event bytes are a view into `line`. */
export function readExportLine(line: Uint8Array): ExportLine {
  if (startsWith(line, prefixBytes, 0)) {
    if (!startsWith(line, middleBytes, prefixBytes.length + 64) || line[line.length - 1] !== closingBrace) {
      return { kind: 'malformed', reason: 'an event line is {"hash":"<64 hex>","event":<canonical event>}' };
    }
    const hash = latin1Decoder.decode(line.subarray(prefixBytes.length, prefixBytes.length + 64));
    if (!sha256HexPattern.test(hash)) return { kind: 'malformed', reason: 'the event hash is not 64 lowercase hex digits' };
    return { kind: 'event', hash, bytes: line.subarray(eventBytesStart, line.length - 1) };
  }
  let value: unknown;
  try {
    value = JSON.parse(utf8Decoder.decode(line));
  } catch {
    return { kind: 'malformed', reason: 'the line is not UTF-8 JSON' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { kind: 'malformed', reason: 'the line is not a JSON object' };
  const record = (value as Record<string, unknown>)['record'];
  if (record === 'header') return { kind: 'header', header: value as Record<string, unknown> };
  if (record === 'trailer') return { kind: 'trailer', trailer: value as Record<string, unknown> };
  return { kind: 'malformed', reason: 'the line is neither an event, a header nor a trailer' };
}

/** Null when the header is well-formed, otherwise what is wrong with it. */
export function headerProblem(header: Record<string, unknown>): string | null {
  const keys = ['record', 'format', 'exported_at', 'head_position', 'ledger_public_key', 'ledger_key_id'];
  for (const key of Object.keys(header)) if (!keys.includes(key)) return `unknown header field ${key}`;
  if (header['format'] !== exportFormat) return `format must be ${exportFormat}, found ${JSON.stringify(header['format'])}`;
  if (typeof header['exported_at'] !== 'string' || !Number.isFinite(Date.parse(header['exported_at']))) return 'exported_at must be a time';
  const head = header['head_position'];
  if (typeof head !== 'string' || !(head === '0' || counterPattern.test(head))) return 'head_position must be a decimal position';
  if (typeof header['ledger_public_key'] !== 'string' || !publicKeyPattern.test(header['ledger_public_key'])) {
    return 'ledger_public_key must be base64url of a 32-byte Ed25519 key';
  }
  if (typeof header['ledger_key_id'] !== 'string' || !keyIdPattern.test(header['ledger_key_id'])) return 'ledger_key_id is malformed';
  return null;
}

/** Null when the trailer is well-formed, otherwise what is wrong with it. */
export function trailerProblem(trailer: Record<string, unknown>): string | null {
  const keys = ['record', 'event_count', 'head_position', 'head_hash'];
  for (const key of Object.keys(trailer)) if (!keys.includes(key)) return `unknown trailer field ${key}`;
  for (const key of ['event_count', 'head_position']) {
    const value = trailer[key];
    if (typeof value !== 'string' || !(value === '0' || counterPattern.test(value))) return `${key} must be a decimal count`;
  }
  const hash = trailer['head_hash'];
  if (typeof hash !== 'string' || !(sha256HexPattern.test(hash))) return 'head_hash must be 64 lowercase hex digits';
  return null;
}
