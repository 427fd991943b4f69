// The JetStream API errors services tell apart, named once.
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import { StreamPublishError } from "./stream-publisher.ts";

/** A consumer that does not exist (so it may be created). */
export function isConsumerNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound;
}

/**
 * A compare-and-set that lost: the key or subject changed since the revision given (read again and retry) — as
 * nats.js reports it, or as the kit's StreamPublisher does.
 */
export function isWrongRevision(err: unknown): boolean {
  const code = err instanceof JetStreamApiError ? err.code : err instanceof StreamPublishError ? err.errCode : undefined;
  return code === JetStreamApiCodes.StreamWrongLastSequence || code === JetStreamApiCodes.StreamWrongLastSequenceUnknown;
}
