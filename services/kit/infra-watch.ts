// Following an infra/ policy file live: load it once (a bad file fails the start), then reload it whenever it
// changes on disk. A reload that fails (invalid JSON, a schema violation, a check of the caller's) keeps the last
// good value and is reported; the next good edit applies. Minimal on purpose, to be folded into the one kit helper
// for watching infra files: the tenants (tenants.ts) and the backpressure thresholds (pressure.ts) reload with it.
//
// The directory is watched, not the file: an editor that saves by writing a new file and renaming it over the old
// one (vim, most IDEs, `mv`) replaces the inode a file watch would follow and silence it.
import { readFileSync, watch, type FSWatcher } from "node:fs";
import { basename, dirname } from "node:path";

/** A followed file: its latest good value. */
export interface WatchedInfraFile<T> {
  /** The value of the last good version of the file. */
  current(): T;
  /** Stops watching. */
  close(): void;
}

/** What {@link watchInfraFile} reports. */
export interface InfraWatchOptions<T> {
  /** A new good version was applied. */
  onReload?: (value: T) => void;
  /** A change was refused: the last good value stays. */
  onError?: (err: Error) => void;
  /** Coalesces the several events one save makes. Default 50 ms. */
  debounceMs?: number;
}

/**
 * Loads `path` with `load` (which reads and validates it, throwing on a bad file) and reloads it on every change of
 * its text. Throws what `load` throws the first time.
 */
export function watchInfraFile<T>(path: string, load: (path: string) => T, opts: InfraWatchOptions<T> = {}): WatchedInfraFile<T> {
  let value = load(path);
  let text = readText(path);
  let timer: NodeJS.Timeout | undefined;
  const reload = () => {
    timer = undefined;
    const now = readText(path);
    if (now === text) return; // touched, or a second event of the same save
    try {
      value = load(path);
      text = now;
      opts.onReload?.(value);
    } catch (err) {
      text = now; // reported once per bad version, not once per event
      opts.onError?.(err as Error);
    }
  };
  let watcher: FSWatcher | undefined;
  try {
    const name = basename(path);
    watcher = watch(dirname(path), { persistent: false }, (_event, changed) => {
      if (changed !== null && changed !== name) return;
      clearTimeout(timer);
      timer = setTimeout(reload, opts.debounceMs ?? 50);
    });
    watcher.on("error", (err) => opts.onError?.(err));
  } catch (err) {
    // A file system without change notifications: the file stays as loaded.
    opts.onError?.(new Error(`${path} cannot be watched (${(err as Error).message}): changes apply at the next restart`));
  }
  return {
    current: () => value,
    close() {
      clearTimeout(timer);
      watcher?.close();
    },
  };
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}
