// The JetStream API errors services tell apart, named once.
import { JetStreamApiCodes, JetStreamApiError, type ConsumerConfig, type ConsumerInfo, type JetStreamManager } from "@nats-io/jetstream";
import { StreamPublishError } from "./stream-publisher.ts";

/** A stream (or KV bucket) that does not exist: never created, or deleted. */
export function isStreamNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound;
}

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

/**
 * The durable `config.durable_name` of `stream`: as it is when it exists, else created with `config` (`create`
 * may adjust it, e.g. paused). Services starting together race to create a durable: the loser of the create
 * reads the one the winner made. Anything but "not found" is the answer (a timeout or a refusal is no "missing").
 */
export async function ensureConsumer(jsm: JetStreamManager, stream: string, config: Partial<ConsumerConfig>, create: Partial<ConsumerConfig> = config): Promise<ConsumerInfo> {
  const durable = config.durable_name!;
  return jsm.consumers.info(stream, durable).catch(async (err: unknown) => {
    if (!isConsumerNotFound(err)) throw err;
    return jsm.consumers.add(stream, create).catch((e: unknown) => {
      if (!isConsumerExists(e)) throw e;
      return jsm.consumers.info(stream, durable);
    });
  });
}
