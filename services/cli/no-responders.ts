// The one error every control request can meet before any service logic: nobody serves the subject. nats.js
// reports it as a NoRespondersError, sometimes wrapped as the cause of a RequestError.

/** True when `err` says no service answered the request's subject. */
export function isNoResponders(err: unknown): boolean {
  const e = err as Error | undefined;
  return e?.name === "NoRespondersError" || (e?.cause as Error | undefined)?.name === "NoRespondersError" || /no responders/i.test(e?.message ?? "");
}
