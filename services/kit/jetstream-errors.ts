// The JetStream API errors services tell apart, named once.
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import { StreamPublishError } from "./stream-publisher.ts";

/** A consumer that does not exist (so it may be created). */
export function isConsumerNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound;
}

/** JetStream's err_code when a consumer is created that someone else created meanwhile (with another configuration). */
const CONSUMER_ALREADY_EXISTS = 10148;

/** A consumer created by someone else meanwhile: another replica won the race to create it (read it instead). */
export function isConsumerExists(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === CONSUMER_ALREADY_EXISTS;
}

/**
 * A compare-and-set that lost: the key or subject changed since the revision given (read again and retry) — as
 * nats.js reports it, or as the kit's StreamPublisher does.
 */
export function isWrongRevision(err: unknown): boolean {
  const code = err instanceof JetStreamApiError ? err.code : err instanceof StreamPublishError ? err.errCode : undefined;
  return code === JetStreamApiCodes.StreamWrongLastSequence || code === JetStreamApiCodes.StreamWrongLastSequenceUnknown;
}
