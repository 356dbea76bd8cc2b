// uvu swallows an exception thrown by a `before` hook: the file then "passes" with nothing
// run. Run a file's setup through guardedSetup instead: its error fails every test.

import type { Test } from 'uvu';

export function guardedSetup(test: Test, setup: () => void | Promise<void>): void {
  let failure: unknown;
  test.before(async () => {
    try {
      await setup();
    } catch (e) {
      failure = e ?? new Error('setup failed');
    }
  });
  test.before.each(() => {
    if (failure !== undefined) throw failure;
  });
}
