// Issue 12, finding 10: a prove without a size published a new checkpoint each time the log had grown, and a
// checkpoint is permanent (MESH_AUDIT denies deletes): a read-only auditor could write one per question. Now a
// question uses the newest checkpoint there is, and publishes one only when none covers the record asked about.
import assert from "node:assert/strict";
import { test } from "node:test";
import { createLineageApi } from "../../services/lineage/api.ts";
import { checkpoint, newKey, populate, referenceFlow, tempStore } from "../lineage-flow-fixture.ts";

test("auditor writes - proofs without a size use the newest checkpoint; one is published only for a record no checkpoint covers", async (t) => {
  const store = await tempStore(t);
  const flow = referenceFlow();
  const key = newKey();
  const half = Math.floor(flow.contents.length / 2);
  await populate(store, flow.contents.slice(0, half));
  await checkpoint(store, key);
  await populate(store, flow.contents.slice(half)); // the log grew past the newest checkpoint
  let published = 0;
  const api = createLineageApi({
    store, publicKey: key, published: async () => [],
    checkpointNow: async () => {
      published++;
      return checkpoint(store, key); // what the checkpointer does: a checkpoint of the whole log
    },
  });
  for (let i = 0; i < 5; i++) await api.prove.run({ index: String(i) });
  await api.consistency.run({ from: String(half) });
  await api.export.run({ format: "jsonl", from: "2000-01-01T00:00:00Z" });
  assert.equal(published, 0, "questions about what a checkpoint covers publish nothing, although the log grew");

  const uncovered = String(flow.contents.length - 1);
  const proof = await api.prove.run({ index: uncovered });
  assert.equal(published, 1, "a record no checkpoint covers gets one, once");
  assert.equal((proof as { size: number }).size, (await store.state()).size);
  await api.prove.run({ index: uncovered });
  assert.equal(published, 1);
});
