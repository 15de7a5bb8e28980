import t from 'tap';
import { runDevRuntimeCli, type DevRuntimeCliEnvironment } from '../../src/devRuntime/server.ts';
import { eventually, within } from '../support/waiting.ts';

/** `b3iq dev-runtime` in process: flags reach the runtime, and shutdown closes it and exits 0. */

interface FakeProcess {
  environment: DevRuntimeCliEnvironment;
  output: () => string;
  errors: () => string;
  shutdown: () => void;
}

function fakeProcess(): FakeProcess {
  let output = '';
  let errors = '';
  let shutdown = () => {};
  const stopped = new Promise<void>((resolve) => (shutdown = resolve));
  return {
    environment: {
      writeOutput: (text) => void (output += text),
      writeError: (text) => void (errors += text),
      untilShutdown: () => stopped,
    },
    output: () => output,
    errors: () => errors,
    shutdown: () => shutdown(),
  };
}

t.test('runs with the given flags until shutdown, then exits 0', async (t) => {
  const fake = fakeProcess();
  const exitCode = runDevRuntimeCli(['--port', '0', '--tokens', '3', '--model', 'one', '--model', 'two', '--fault', 'missing_usage'], fake.environment);
  await eventually('the listening line', () => /listening on/.test(fake.errors()));
  const url = /dev runtime listening on (http:\/\/\S+)/.exec(fake.errors())?.[1];
  t.ok(url, 'prints its URL to stderr');
  const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: Array<{ id: string }> };
  t.same(
    models.data.map((entry) => entry.id),
    ['one', 'two'],
  );
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    body: JSON.stringify({ model: 'two', messages: [{ role: 'user', content: 'hi' }] }),
  });
  const completion = (await response.json()) as Record<string, unknown>;
  t.match(completion, { choices: [{ message: { content: 'tok1 tok2 tok3' } }] });
  t.notOk('usage' in completion, 'the fault flag applies');
  fake.shutdown();
  t.equal(await within('the CLI to exit', exitCode, 2000), 0);
  await t.rejects(fetch(`${url}/health`), 'the runtime is closed');
});

t.test('usage errors exit 2 with the usage text; --help exits 0', async (t) => {
  for (const argv of [['--tokens', 'many'], ['--fault', 'melt'], ['--port', '99999'], ['--verbose'], ['stray']]) {
    const fake = fakeProcess();
    t.equal(await runDevRuntimeCli(argv, fake.environment), 2, argv.join(' '));
    t.match(fake.errors(), /Usage: b3iq dev-runtime/);
  }
  const help = fakeProcess();
  t.equal(await runDevRuntimeCli(['--help'], help.environment), 0);
  t.match(help.output(), /--first-token-delay-ms/);
});

t.test('a port already in use exits 1', async (t) => {
  const first = fakeProcess();
  const running = runDevRuntimeCli(['--port', '0'], first.environment);
  await eventually('the first runtime', () => /listening on/.test(first.errors()));
  const port = /:(\d+)\s*$/.exec(first.errors())?.[1] ?? '';
  const second = fakeProcess();
  t.equal(await runDevRuntimeCli(['--port', port], second.environment), 1);
  t.match(second.errors(), /could not start/);
  first.shutdown();
  t.equal(await running, 0);
});
