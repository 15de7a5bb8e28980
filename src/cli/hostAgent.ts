import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startHostAgent } from '../hostAgent/agent.ts';

const usage = `Usage: b3iq host-agent --runtime-url URL [--runtime-kind KIND] [--control-plane-url URL]
                       [--data-dir DIR] [--host H] [--port N] [--advertised-url URL]

Fronts an OpenAI-compatible runtime (vLLM, Ollama, llama.cpp server, b3iq dev-runtime), signs a
receipt for every completion, and — with a control plane — enrolls and sends signed heartbeats.
Defaults: --runtime-kind openai, --data-dir ./.b3iq-node, --host 127.0.0.1, --port 8831.
Environment: B3IQ_RUNTIME_URL, B3IQ_CONTROL_PLANE_URL, B3IQ_NODE_DATA_DIR.`;

/** `b3iq host-agent`: runs until SIGINT or SIGTERM. */
export async function runHostAgentCli(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      'runtime-url': { type: 'string' },
      'runtime-kind': { type: 'string' },
      'control-plane-url': { type: 'string' },
      'data-dir': { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      'advertised-url': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const runtimeUrl = values['runtime-url'] ?? process.env['B3IQ_RUNTIME_URL'];
  if (values.help || runtimeUrl === undefined) {
    process.stderr.write(`${usage}\n`);
    return values.help ? 0 : 2;
  }
  const port = Number(values.port ?? 8831);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    process.stderr.write(`--port must be an integer from 0 to 65535\n`);
    return 2;
  }
  const controlPlaneUrl = values['control-plane-url'] ?? process.env['B3IQ_CONTROL_PLANE_URL'];
  const agent = await startHostAgent({
    runtimeUrl,
    runtimeKind: values['runtime-kind'] ?? 'openai',
    dataDir: resolve(values['data-dir'] ?? process.env['B3IQ_NODE_DATA_DIR'] ?? '.b3iq-node'),
    ...(controlPlaneUrl === undefined ? {} : { controlPlaneUrl }),
    ...(values['advertised-url'] === undefined ? {} : { advertisedUrl: values['advertised-url'] }),
    host: values.host ?? '127.0.0.1',
    port,
    logger: { level: process.env['LOG_LEVEL'] ?? 'info' },
  });
  process.stderr.write(`b3iq host agent listening on ${agent.url}\nnode id: ${agent.nodeId}\n`);
  await new Promise<void>((resolveSignal) => {
    process.once('SIGINT', resolveSignal);
    process.once('SIGTERM', resolveSignal);
  });
  await agent.close();
  return 0;
}
