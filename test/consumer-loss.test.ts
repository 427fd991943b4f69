// Every service consumes through the kit's one durable-consumer runtime, so every service reports a deleted
// consumer the same way: it stops with exit code 1 and names the consumer, instead of retrying in silence.
// (The agent's and lineage's cases are in test/agent.test.ts and test/lineage-service.test.ts; the gateway's in
// test/gateway.test.ts.) The coordinator's two consumers used to retry forever without a word.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { defaultLayout } from "../services/kit/index.ts";
import { waitFor } from "./harness/index.ts";
import { startOperatedMesh } from "./e2e-fixture.ts";

describe("consumer loss", () => {
  for (const { stream, durable } of defaultLayout().consumersOf("coordinator")) {
    test(`consumer loss - the coordinator exits 1 and names ${durable} when it is deleted`, async () => {
      await using mesh = await startOperatedMesh();
      const coordinator = mesh.spawn("services/coordinator/main.ts", { LOG_LEVEL: "info" });
      await waitFor(() => /"msg":"coordinator started"/.test(coordinator.output()), { what: "every coordinator module started", timeoutMs: 15_000 });
      const jsm = await jetstreamManager(mesh.operator);
      await jsm.consumers.delete(stream, durable);
      assert.equal(await coordinator.exited, 1);
      assert.match(coordinator.output(), new RegExp(`coordinator: consumer ${durable} on ${stream} ended \\(.*\\): was it or its stream deleted\\?`));
    });
  }
});
