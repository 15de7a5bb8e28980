#!/usr/bin/env node
// Entry point of the `b3iq` command. The sources are TypeScript run through tsx's loader, so a
// fresh clone needs no build step.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
try {
  process.exitCode = await main(process.argv.slice(2));
} catch (error) {
  process.stderr.write(`b3iq: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
