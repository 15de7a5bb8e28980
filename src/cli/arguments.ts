import { parseArgs, type ParseArgsConfig } from 'node:util';

/**
 * `parseArgs` that takes an option's value from the next argument even when it starts with a dash.
 * `node:util` refuses `--node-public-key -Xy…` as ambiguous, but a base64url key begins with `-`
 * one time in 64; a user should not have to know to write `--node-public-key=-Xy…`. A next argument
 * that names one of the command's own options is still an option, so a forgotten value is still
 * reported as one.
 */
export function parseCommandLine<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  const args = joinOptionValues(config.args ?? [], config.options ?? {});
  return parseArgs<T>({ ...config, args });
}

function joinOptionValues(args: readonly string[], options: NonNullable<ParseArgsConfig['options']>): string[] {
  const takesValue = new Set<string>();
  const known = new Set<string>();
  for (const [name, option] of Object.entries(options)) {
    const spellings = [`--${name}`, ...(option.short === undefined ? [] : [`-${option.short}`])];
    for (const spelling of spellings) {
      known.add(spelling);
      if (option.type === 'string') takesValue.add(spelling);
    }
  }
  const isOption = (arg: string) => arg === '--' || known.has(arg.split('=', 1)[0]!);
  const joined: string[] = [];
  for (let index = 0; index < args.length; index += 1) {
    const arg = args[index]!;
    if (arg === '--') {
      joined.push(...args.slice(index));
      break;
    }
    const value = args[index + 1];
    if (takesValue.has(arg) && value !== undefined && value.startsWith('-') && !isOption(value)) {
      joined.push(arg.startsWith('--') ? `${arg}=${value}` : `${arg}${value}`);
      index += 1;
    } else {
      joined.push(arg);
    }
  }
  return joined;
}
