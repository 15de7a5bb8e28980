import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { LedgerAudit } from './ledgerAudit.ts';

/**
 * Feeds an export file to the audit line by line, reading it in large chunks: memory holds one
 * chunk and one line, whatever the size of the file. Between chunks it waits for the signature
 * queue, so checks in flight stay bounded.
 */
export async function auditFile(path: string, audit: LedgerAudit, onProgress?: (bytesRead: number, totalBytes: number) => void): Promise<void> {
  const totalBytes = (await stat(path)).size;
  let bytesRead = 0;
  let carry: Buffer | null = null;
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1_048_576 }) as AsyncIterable<Buffer>) {
    bytesRead += chunk.length;
    let start = 0;
    let newline = chunk.indexOf(0x0a);
    if (carry !== null && newline >= 0) {
      audit.line(Buffer.concat([carry, chunk.subarray(0, newline)]));
      carry = null;
      start = newline + 1;
      newline = chunk.indexOf(0x0a, start);
    }
    while (newline >= 0) {
      audit.line(chunk.subarray(start, newline));
      start = newline + 1;
      newline = chunk.indexOf(0x0a, start);
    }
    if (start < chunk.length) carry = carry === null ? Buffer.from(chunk.subarray(start)) : Buffer.concat([carry, chunk.subarray(start)]);
    onProgress?.(bytesRead, totalBytes);
    await audit.ready();
  }
  // A last line without its newline is still read: if the file was cut short, the trailer check says so.
  if (carry !== null && carry.length > 0) audit.line(carry);
}
