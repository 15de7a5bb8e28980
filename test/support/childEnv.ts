/**
 * The environment for a child process a test starts (the b3iq CLI, a script under tsx): the test's
 * own, without tap's runner variables, and with coverage recording off. Such a child compiles the sources with
 * tsx, whose source maps are not the ones tap's loader made; with NODE_V8_COVERAGE and the
 * process-info hooks inherited, its coverage joins the suite's and can spoil the merged report
 * (every file counted as one line). The suite's coverage is the test processes' own.
 */
export function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const own = Object.entries(process.env).filter(
    ([name]) => !name.startsWith('TAP') && !name.startsWith('_TAPJS_') && name !== 'NODE_OPTIONS' && name !== 'NODE_V8_COVERAGE',
  );
  // tap's process-info hook puts itself back into every child's NODE_OPTIONS; this tells it not to
  // record the child's coverage.
  return { ...Object.fromEntries(own), _TAPJS_PROCESSINFO_COVERAGE_: '0', ...extra };
}
