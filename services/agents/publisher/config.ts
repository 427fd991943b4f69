// The publisher's configuration: environment → typed → validated → frozen.
import { join } from "node:path";
import { dataDir } from "../../kit/index.ts";

/** The environment variables the publisher reads. */
export const PublisherEnv = {
  /** Where published reports are written (the stand-in for an external system). */
  OutboxDir: "CAUSEWAY_OUTBOX_DIR",
} as const;

/** The publisher's settings. */
export interface PublisherConfig {
  /** Directory published reports go to. Default `<data>/outbox`. */
  readonly outboxDir: string;
}

/** Reads and freezes the publisher's configuration. */
export function loadPublisherConfig(env: NodeJS.ProcessEnv = process.env): PublisherConfig {
  const dir = env[PublisherEnv.OutboxDir]?.trim();
  return Object.freeze({ outboxDir: dir ? dir : join(dataDir(), "outbox") });
}
