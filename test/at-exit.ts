// Work that must run when the test process exits (namespaces, devices and temporary
// directories to remove), behind one 'exit' listener: the suite runs all its files in one
// process, and Node warns when one event has more than ten listeners.

const work: (() => void)[] = [];

/** Run `fn` when the process exits; a failing one is reported and the others still run. */
export function atExit(fn: () => void): void {
  if (work.length === 0) {
    process.on('exit', () => {
      for (const f of work.splice(0)) {
        try {
          f();
        } catch (e) {
          console.error(`exit cleanup failed: ${String(e)}`);
        }
      }
    });
  }
  work.push(fn);
}
