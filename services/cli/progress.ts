// Progress lines for long CLI work: "✓ step (0.12 s)" or "✗ step: why", so a person sees where it stands.

/** Runs `fn` as a named step, printing ✓ with its duration or ✗ with the error, and returns its value. */
export async function step<T>(title: string, fn: () => Promise<T> | T, detail?: (value: T) => string): Promise<T> {
  const start = performance.now();
  try {
    const value = await fn();
    const seconds = ((performance.now() - start) / 1000).toFixed(2);
    const more = detail ? ` — ${detail(value)}` : "";
    console.log(`✓ ${title}${more} (${seconds} s)`);
    return value;
  } catch (err) {
    console.log(`✗ ${title}: ${err instanceof Error ? err.message : String(err)}`);
    throw err;
  }
}
