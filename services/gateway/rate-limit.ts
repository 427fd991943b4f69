// Per-upstream rate limits: a token bucket per upstream (refill `perSecond`, size `burst`). Taking n tokens
// either succeeds whole or tells how long until it would, which becomes `Retry-After`.

/** The limiter of every upstream. */
export interface RateLimiter {
  /** Takes `n` tokens for `upstream`: 0 when granted, else the milliseconds until `n` would be available. */
  take(upstream: { name: string; perSecond: number; burst: number }, n: number, now?: number): number;
}

/**
 * A limiter with one bucket per upstream name, full at first use. With `share` > 1 (one of several gateway
 * worker processes) each bucket is that share of the upstream's rate and burst, so the workers together allow
 * the declared rate; connections are spread over the workers, so the split is even only on average.
 */
export function createRateLimiter(share = 1): RateLimiter {
  const buckets = new Map<string, { tokens: number; at: number }>();
  return {
    take(declared, n, now = performance.now()) {
      const upstream = share === 1 ? declared : { name: declared.name, perSecond: declared.perSecond / share, burst: Math.max(1, Math.floor(declared.burst / share)) };
      let b = buckets.get(upstream.name);
      if (b === undefined) {
        b = { tokens: upstream.burst, at: now };
        buckets.set(upstream.name, b);
      }
      b.tokens = Math.min(upstream.burst, b.tokens + ((now - b.at) / 1000) * upstream.perSecond);
      b.at = now;
      if (b.tokens >= n) {
        b.tokens -= n;
        return 0;
      }
      // More than the bucket holds never fits: say when a full bucket would be back, the best it gets.
      const missing = Math.min(n, upstream.burst) - b.tokens;
      return Math.max(1, Math.ceil((missing / upstream.perSecond) * 1000));
    },
  };
}
