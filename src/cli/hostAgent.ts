import { resolve } from 'node:path';
import { readPrivateFile } from '../credentials/privateFile.ts';
import { startHostAgent } from '../hostAgent/agent.ts';
import { LocalKeyFile, localKeyScopes, type LocalKeyScope, type LocalKeyView } from '../hostAgent/localKeys.ts';
import { LanExposureRefused } from '../hostAgent/options.ts';
import { parseCommandLine } from './arguments.ts';

const usage = `Usage: b3iq host-agent --runtime-url URL [--runtime-kind KIND] [--control-plane-url URL]
                       [--data-dir DIR] [--host H] [--port N] [--advertised-url URL]
                       [--allow-lan] [--setup-token-file FILE]
       b3iq host-agent keys create --scope chat,models [--name NAME] [--secret-file FILE|-] [--data-dir DIR]
       b3iq host-agent keys list [--json] [--data-dir DIR]
       b3iq host-agent keys revoke KEY_ID [--data-dir DIR]

Fronts an OpenAI-compatible runtime (vLLM, Ollama, llama.cpp server, b3iq dev-runtime), signs a
receipt for every completion, serves the local API with b3iq_local_ keys and the owner's setup
token, and — with a control plane — enrolls and sends signed heartbeats.
Defaults: --runtime-kind openai, --data-dir ./.b3iq-node, --host 127.0.0.1, --port 8831.
A host other than loopback needs --allow-lan. The setup token is generated into DIR/setup-token
on the first start unless --setup-token-file names one; its path is printed, never the token.
keys create prints the new secret once on stdout (nothing else there); --secret-file registers an
existing secret read from a file or stdin (-) and prints only the key id.
Environment: B3IQ_RUNTIME_URL, B3IQ_CONTROL_PLANE_URL, B3IQ_NODE_DATA_DIR, B3IQ_SETUP_TOKEN_FILE,
B3IQ_HOST_AGENT_ALLOW_LAN=1.`;

export interface HostAgentCliIo {
  readStdin(maxBytes: number): Promise<string>;
  stdout(text: string): void;
  stderr(text: string): void;
  now(): Date;
}

const processIo: HostAgentCliIo = {
  readStdin: async (maxBytes) => {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of process.stdin) {
      size += (chunk as Buffer).length;
      if (size > maxBytes) throw new RangeError(`stdin is larger than ${maxBytes} bytes`);
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks).toString('utf8');
  },
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  now: () => new Date(),
};

/** An argument error may quote what was typed; a secret typed by mistake is not printed back. */
function withoutSecrets(message: string): string {
  return message.replace(/b3iq_[A-Za-z0-9_-]+/g, 'b3iq_[redacted]');
}

/** `b3iq host-agent`: runs until SIGINT or SIGTERM; `b3iq host-agent keys …` manages local keys. */
export async function runHostAgentCli(argv: string[], io: HostAgentCliIo = processIo): Promise<number> {
  try {
    if (argv[0] === 'keys') return await runKeysCli(argv.slice(1), io);
    return await runAgent(argv, io);
  } catch (error) {
    if (error instanceof LanExposureRefused || (error as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS') === true) {
      io.stderr(`${withoutSecrets((error as Error).message)}\n`);
      return 2;
    }
    throw error;
  }
}

async function runAgent(argv: string[], io: HostAgentCliIo): Promise<number> {
  const { values } = parseCommandLine({
    args: argv,
    options: {
      'runtime-url': { type: 'string' },
      'runtime-kind': { type: 'string' },
      'control-plane-url': { type: 'string' },
      'data-dir': { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      'advertised-url': { type: 'string' },
      'allow-lan': { type: 'boolean' },
      'setup-token-file': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const runtimeUrl = values['runtime-url'] ?? process.env['B3IQ_RUNTIME_URL'];
  if (values.help || runtimeUrl === undefined) {
    io.stderr(`${usage}\n`);
    return values.help ? 0 : 2;
  }
  const port = Number(values.port ?? 8831);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    io.stderr(`--port must be an integer from 0 to 65535\n`);
    return 2;
  }
  const controlPlaneUrl = values['control-plane-url'] ?? process.env['B3IQ_CONTROL_PLANE_URL'];
  const setupTokenFile = values['setup-token-file'] ?? process.env['B3IQ_SETUP_TOKEN_FILE'];
  const agent = await startHostAgent({
    runtimeUrl,
    runtimeKind: values['runtime-kind'] ?? 'openai',
    dataDir: dataDirOf(values['data-dir']),
    ...(controlPlaneUrl === undefined ? {} : { controlPlaneUrl }),
    ...(values['advertised-url'] === undefined ? {} : { advertisedUrl: values['advertised-url'] }),
    ...(setupTokenFile === undefined ? {} : { setupTokenFile: resolve(setupTokenFile) }),
    host: values.host ?? '127.0.0.1',
    allowLan: values['allow-lan'] === true || process.env['B3IQ_HOST_AGENT_ALLOW_LAN'] === '1',
    port,
    logger: { level: process.env['LOG_LEVEL'] ?? 'info' },
  });
  io.stderr(
    `b3iq host agent listening on ${agent.url}\nnode id: ${agent.nodeId}\n` +
      `setup token (send as X-B3IQ-Setup-Token): ${agent.setupTokenPath}\n`,
  );
  await new Promise<void>((resolveSignal) => {
    process.once('SIGINT', resolveSignal);
    process.once('SIGTERM', resolveSignal);
  });
  await agent.close();
  return 0;
}

function dataDirOf(option: string | undefined): string {
  return resolve(option ?? process.env['B3IQ_NODE_DATA_DIR'] ?? '.b3iq-node');
}

async function runKeysCli(argv: string[], io: HostAgentCliIo): Promise<number> {
  const { values, positionals } = parseCommandLine({
    args: argv,
    allowPositionals: true,
    options: {
      scope: { type: 'string' },
      name: { type: 'string' },
      'secret-file': { type: 'string' },
      json: { type: 'boolean' },
      'data-dir': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [action, ...rest] = positionals;
  const keys = new LocalKeyFile(dataDirOf(values['data-dir']));
  if (values.help === true) {
    io.stderr(`${usage}\n`);
    return 0;
  }
  try {
    if (action === 'create' && rest.length === 0) return await createKey(keys, values, io);
    if (action === 'list' && rest.length === 0) return await listKeys(keys, values.json === true, io);
    if (action === 'revoke' && rest.length === 1) return await revokeKey(keys, rest[0]!, io);
  } catch (error) {
    // A refused secret, an unsafe or damaged key file, a lock held too long: said plainly, exit 1.
    if (!(error instanceof Error)) throw error;
    io.stderr(`${withoutSecrets(error.message)}\n`);
    return 1;
  }
  io.stderr(`${usage}\n`);
  return 2;
}

async function createKey(keys: LocalKeyFile, values: { scope?: string; name?: string; 'secret-file'?: string }, io: HostAgentCliIo): Promise<number> {
  const scopes = (values.scope ?? '').split(',').map((scope) => scope.trim()).filter((scope) => scope !== '');
  if (scopes.length === 0 || !scopes.every((scope) => (localKeyScopes as readonly string[]).includes(scope))) {
    io.stderr(`--scope is required: a comma-separated list of ${localKeyScopes.join(', ')}\n`);
    return 2;
  }
  const secretFile = values['secret-file'];
  const secret = secretFile === undefined ? undefined : await readSecret(secretFile, io);
  const created = await keys.create({ scopes: scopes as LocalKeyScope[], name: values.name ?? null, now: io.now(), ...(secret === undefined ? {} : { secret }) });
  if (secret === undefined) {
    io.stdout(`${created.secret}\n`);
    io.stderr(`created local key ${created.key.key_id} (scopes ${created.key.scopes.join(',')}); the secret above is shown once and stored only as a hash\n`);
  } else {
    io.stdout(`${created.key.key_id}\n`);
    io.stderr(`registered the secret as local key ${created.key.key_id} (scopes ${created.key.scopes.join(',')}); only its hash is stored\n`);
  }
  return 0;
}

/** A secret from a file (owner-only, like every secret file) or from stdin; never from argv. */
async function readSecret(source: string, io: HostAgentCliIo): Promise<string> {
  if (source === '-') return (await io.readStdin(4096)).trim();
  const bytes = await readPrivateFile(resolve(source), 'the secret file', 4096);
  if (bytes === null) throw new Error(`the secret file ${source} does not exist`);
  return bytes.toString('utf8').trim();
}

async function listKeys(keys: LocalKeyFile, json: boolean, io: HostAgentCliIo): Promise<number> {
  const list = await keys.list();
  if (json) {
    io.stdout(`${JSON.stringify({ keys: list }, null, 2)}\n`);
    return 0;
  }
  io.stdout(`${['KEY_ID', 'STATUS', 'SCOPES', 'CREATED', 'NAME'].join('\t')}\n`);
  for (const key of list) io.stdout(`${row(key)}\n`);
  return 0;
}

function row(key: LocalKeyView): string {
  return [key.key_id, key.status, key.scopes.join(','), key.created_at, key.name ?? '-'].join('\t');
}

async function revokeKey(keys: LocalKeyFile, keyId: string, io: HostAgentCliIo): Promise<number> {
  const revoked = await keys.revoke(keyId, io.now());
  if (revoked === null) {
    io.stderr(`no local key ${withoutSecrets(keyId)}\n`);
    return 1;
  }
  io.stdout(`revoked ${revoked.key_id} at ${revoked.revoked_at}\n`);
  return 0;
}
