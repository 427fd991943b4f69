// When the reader of `causeway`'s output goes away (`make demo | head`), the command stops: stdout's EPIPE is the
// reader's choice, not an error. A command that has started processes for the length of its run (the demo's
// nats-server and services; what `causeway up` started before it could say so) registers how to stop them
// here, so a closed pipe never leaves them running: each cleanup runs (bounded), then the process exits.
/** What to stop when the output closes; registered by a command while it holds the processes. */
type Cleanup = () => Promise<unknown>;

const cleanups = new Set<Cleanup>();
/** Longest the cleanups may take together before the process exits anyway. */
const CLEANUP_BUDGET_MS = 20_000;
let closing: Promise<never> | undefined;

/** Registers `cleanup` to run if the output closes; returns the function that unregisters it. */
export function onOutputClosed(cleanup: Cleanup): () => void {
  cleanups.add(cleanup);
  return () => void cleanups.delete(cleanup);
}

/**
 * The output closed: runs every registered cleanup (all at once, at most CLEANUP_BUDGET_MS), says on stderr
 * what it stopped, and exits 0 — the reader chose to stop reading.
 */
export function outputClosed(command: string): Promise<never> {
  closing ??= (async () => {
    const pending = [...cleanups];
    cleanups.clear();
    if (pending.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled(pending.map((c) => c())),
        new Promise((resolve) => { timer = setTimeout(resolve, CLEANUP_BUDGET_MS); }),
      ]);
      clearTimeout(timer);
      process.stderr.write(`causeway ${command}: the output closed; stopped what it had started\n`);
    }
    process.exit(0);
  })();
  return closing;
}
