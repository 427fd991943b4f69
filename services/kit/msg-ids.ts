// Nats-Msg-Id values. A stream keeps one message per id within its duplicate window and answers a second publish
// of the id with `duplicate: true` and the first one's sequence, storing nothing. An id that another principal
// can compute lets it publish first and make the real message vanish: a quarantine copy, an output, a grant's
// forward, a release, a decision (issue 12, finding 4). So every id the mesh publishes under is built here:
//
// - namespaced by its publisher: `<principal>/<kind>/<parts…>`, and
// - ending in a tag only the publisher's key can compute (HMAC-SHA256 under a secret derived from its private
//   key). The id stays deterministic — a retry or a redelivery gets the same id and the window still absorbs
//   it — but nobody without the key can publish under it first.
//
// Where the publisher may read the stream back (the coordinator may direct-get every mesh stream), a duplicate
// ack is not taken on trust either: `confirmDuplicate` reads the message at the ack's sequence and requires it to
// be the publisher's (same id, same subject, its signature or its bytes). Otherwise the publish failed with
// CW_ERR_MSG_ID_TAKEN and the caller keeps what it holds (naks, retries, answers with the code).
import { createHash, createHmac, createSecretKey, type KeyObject } from "node:crypto";
import type { JetStreamManager, StoredMsg } from "@nats-io/jetstream";
import { NatsBinding } from "./binding.ts";
import { CausewayError, ErrorCode } from "./errors.ts";
import { createKeyring, type SigningKey } from "./keys.ts";
import { verifyEvent } from "./verifiability.ts";

/** What a message id is for: the second token of every id. */
export const MsgIdKind = {
  Quarantine: "quarantine",
  Output: "output",
  Grant: "grant",
  Release: "release",
  Decision: "decision",
  /** The coordinator's copy of an input it moves from one version's lane to another's (coordinator/rollout.ts). */
  Handover: "handover",
} as const;
export type MsgIdKindValue = (typeof MsgIdKind)[keyof typeof MsgIdKind];

/** Who publishes: the principal, and its signing key (without one the id is namespaced but not tagged). */
export interface MsgIdOwner {
  readonly principal: string;
  readonly key?: SigningKey | undefined;
}

const TAG_CONTEXT = "causeway msg-id v1\0";
const secrets = new WeakMap<KeyObject, KeyObject>();

// A KeyObject, made once: an HMAC keyed with a Buffer builds one on every call (about 8 µs against 1.5 µs).
function secretOf(key: SigningKey): KeyObject {
  let secret = secrets.get(key.privateKey);
  if (secret === undefined) {
    // A one-way derivation: the secret reveals nothing of the key, and the key never leaves this process.
    secret = createSecretKey(createHash("sha256").update(TAG_CONTEXT).update(key.privateKey.export({ format: "der", type: "pkcs8" })).digest());
    secrets.set(key.privateKey, secret);
  }
  return secret;
}

/**
 * The message id of `owner`'s `kind` message about `parts`: `<principal>/<kind>/<parts…>/<tag>`. The same
 * owner, key, kind and parts give the same id (a retry is deduplicated); the tag needs the owner's key.
 */
export function msgId(owner: MsgIdOwner, kind: MsgIdKindValue, ...parts: readonly (string | number)[]): string {
  const body = [owner.principal, kind, ...parts.map(String)].join("/");
  if (owner.key === undefined) return body;
  return `${body}/${createHmac("sha256", secretOf(owner.key)).update(body).digest("base64url").slice(0, 22)}`;
}

/** A stream's acknowledgement: nats.js's PubAck and the kit's stream publisher's both fit. */
export interface AckLike {
  readonly stream: string;
  readonly seq: number;
  readonly duplicate: boolean;
}

/**
 * When `ack` is a duplicate, confirms that the message the stream holds at its sequence is the one this
 * publisher meant to store: its Nats-Msg-Id is `id` and `isMine` accepts it. Throws CW_ERR_MSG_ID_TAKEN when it
 * is someone else's (or gone); a read that fails throws as it is (the caller retries either way).
 */
export async function confirmDuplicate(jsm: JetStreamManager, ack: AckLike, id: string, isMine: (stored: StoredMsg) => boolean): Promise<void> {
  if (!ack.duplicate) return;
  const stored = await jsm.direct.getMessage(ack.stream, { seq: ack.seq });
  if (stored && stored.header.get("Nats-Msg-Id") === id && isMine(stored)) return;
  throw new CausewayError(ErrorCode.MsgIdTaken,
    `${ack.stream} answered message id ${id} as a duplicate of #${ack.seq}, which is not this publisher's message: nothing was stored`,
    { details: { stream: ack.stream, seq: ack.seq } });
}

/** `stored` holds exactly `data` on `subject`. */
export function sameBytes(stored: StoredMsg, subject: string, data: Uint8Array): boolean {
  return stored.subject === subject && Buffer.from(stored.data).equals(Buffer.from(data));
}

/** `stored` is an event with id `eventId` on `subject` whose signature verifies with `key` (a retry re-signs, so bytes may differ). */
export function signedWith(stored: StoredMsg, subject: string, eventId: string, key: SigningKey): boolean {
  if (stored.subject !== subject) return false;
  try {
    const event = NatsBinding.toEvent({ headers: stored.header, data: stored.data });
    return event.id === eventId && verifyEvent(event, createKeyring([key])).event.id === eventId;
  } catch {
    return false;
  }
}
