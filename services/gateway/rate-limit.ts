// Per-upstream rate limits: a token bucket per upstream (refill `perSecond`, size `burst`). Taking n tokens
// either succeeds whole or tells how long until it would, which becomes `Retry-After` — or that it never will.

/** What the limiter reads of an upstream. */
export interface RateLimitedUpstream {
  readonly name: string;
  readonly perSecond: number;
  readonly burst: number;
}

/** The limiter of every upstream. */
export interface RateLimiter {
  /**
   * Takes `n` tokens for `upstream`: 0 when granted, else the milliseconds until `n` would be available, or
   * Infinity when `n` is more than the bucket ever holds (capacity()): waiting never helps, nothing is taken.
   */
  take(upstream: RateLimitedUpstream, n: number, now?: number): number;
  /** The most tokens one take() can get for `upstream`: its burst, or this worker's share of it. */
  capacity(upstream: RateLimitedUpstream): number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * A limiter with one bucket per upstream name, full at first use. With `share` > 1 (one of several gateway
 * worker processes) each bucket is that share of the upstream's rate and burst, so the workers together allow
 * the declared rate; connections are spread over the workers, so the split is even only on average.
 */
export function createRateLimiter(share = 1): RateLimiter {
  const buckets = new Map<string, Bucket>();
  const burstOf = (upstream: RateLimitedUpstream) => (share === 1 ? upstream.burst : Math.max(1, Math.floor(upstream.burst / share)));
  return {
    take(upstream, n, now = performance.now()) {
      // The rate and burst are the upstream entry's as it is now: an edit (infra/upstreams.json, live) applies at
      // once, the tokens already earned kept within the new burst.
      const perSecond = upstream.perSecond / share, burst = burstOf(upstream);
      let b = buckets.get(upstream.name);
      if (b === undefined) {
        b = { tokens: burst, at: now };
        buckets.set(upstream.name, b);
      }
      b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * perSecond);
      b.at = now;
      if (n > burst) return Infinity;
      if (b.tokens >= n) {
        b.tokens -= n;
        return 0;
      }
      return Math.max(1, Math.ceil(((n - b.tokens) / perSecond) * 1000));
    },
    capacity: burstOf,
  };
}
