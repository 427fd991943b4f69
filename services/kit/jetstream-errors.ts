// The JetStream API errors services tell apart, named once.
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";

/** A consumer that does not exist (so it may be created). */
export function isConsumerNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound;
}

/** A compare-and-set that lost: the key or subject changed since the revision given (read again and retry). */
export function isWrongRevision(err: unknown): boolean {
  return err instanceof JetStreamApiError
    && (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown);
}
