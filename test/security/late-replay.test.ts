// Issue 12, finding 11: a validly signed input re-published after the stream's duplicate window ran the
// handler a second time (and stored its outputs again) unless the agent declared side effects. Every agent now
// marks what it handled, and an input stored later than its signed time plus MESH_CAP's duplicate window is
// looked up before it runs. The test does not wait out the window: the inputs are signed in the past, and the
// window is shortened on the stream between the first run and the replay (the agent reads it at start).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  createLogger, startAgent, type AgentDefinition, type AgentOptions, type CloudEvent, type Emit,
} from "../../services/kit/index.ts";
import { startMesh, type Mesh } from "../mesh-fixture.ts";
import { waitFor } from "../harness/index.ts";

const PLAN = "mesh.cap.plan.v1";
const log = createLogger({ name: "late-replay", level: process.env.LOG_LEVEL ?? "silent" });
const fastConsumer: AgentOptions["consumer"] = { ack_wait: 300_000_000, backoff: [300_000_000], max_deliver: 3 };

/** A pure planner (no `sideEffects`): one task per request; counts its runs per input id. */
function planner(): AgentDefinition & { runs: string[] } {
  const def = {
    principal: "planner", capability: "plan", major: 1, version: "0.0.1-test", description: "test planner",
    accepts: { "report.requested": "https://causeway.dev/schemas/report.requested/1.0.0" },
    emits: { "research.task.created": "https://causeway.dev/schemas/research.task.created/1.0.0" },
    runs: [] as string[],
    handler(input: { event: CloudEvent; data: { topic: string } }, ctx: { subjects: { capability(c: string, m: number): string } }): Promise<Emit[]> {
      def.runs.push(input.event.id);
      return Promise.resolve([{ to: ctx.subjects.capability("research", 1), type: "research.task.created", data: { requestId: input.event.id, taskIndex: 0, totalTasks: 1, query: input.data.topic } }]);
    },
  };
  return def as unknown as AgentDefinition & { runs: string[] };
}

async function setDuplicateWindow(mesh: Mesh, ms: number): Promise<void> {
  const { config } = await mesh.jsm.streams.info("MESH_CAP");
  await mesh.jsm.streams.update("MESH_CAP", { ...config, duplicate_window: ms * 1e6 });
}

describe("late replay", () => {
  test("late replay - a signed input re-published after the duplicate window is absorbed without a second run; a late input that never ran (a release) runs once", async () => {
    await using mesh = await startMesh();
    const def = planner();
    // Signed 10 s ago: timely under the stream's 2-minute window, late under a 5-second one.
    const signedAt = new Date(Date.now() - 10_000).toISOString();
    const request = (topic: string) => mesh.event("gateway", { time: signedAt, data: JSON.stringify({ topic, requester: "a@example.com", questions: ["q"] }) });
    const original = request("original");

    const first = await startAgent(mesh.nc, def, { trust: mesh.trust, signingKey: mesh.keys.planner!, consumer: fastConsumer, log });
    await mesh.publish(PLAN, original);
    await waitFor(() => first.stats().processed === 1, { what: "the original handled" });
    await first.stop();

    // The window shrinks to 5 s: what is stored more than 5 s after its signed time is late from now on.
    await setDuplicateWindow(mesh, 5_000);
    await using second = await startAgent(mesh.nc, def, { trust: mesh.trust, signingKey: mesh.keys.planner!, consumer: fastConsumer, log });
    // The replay: the original's bytes under a new message id, so JetStream's own dedupe plays no part.
    await mesh.publish(PLAN, original, `${original.id}-replayed`);
    // A late copy of an input that never ran (a quarantine release republishes the original bytes later).
    const neverRan = request("released late");
    await mesh.publish(PLAN, neverRan);
    await waitFor(() => second.stats().replays + second.stats().processed === 2, { what: "the replay and the late copy settled" });
    assert.deepEqual({ replays: second.stats().replays, processed: second.stats().processed }, { replays: 1, processed: 1 });
    assert.deepEqual(def.runs, [original.id, neverRan.id], "the original ran once; the late copy that never ran ran once");
    // And the late copy, once handled, is absorbed when it comes again.
    await mesh.publish(PLAN, neverRan, `${neverRan.id}-again`);
    await waitFor(() => second.stats().replays === 2, { what: "the second replay absorbed" });
    assert.equal(def.runs.length, 2);
    const tasks = await mesh.messages("MESH_CAP", "mesh.cap.research.v1");
    assert.equal(tasks.length, 2, "one output per handled input");
    const info = await mesh.jsm.consumers.info("MESH_CAP", "cap-plan-v1");
    assert.equal(info.num_ack_pending + info.num_pending, 0, "every copy acked");
  });
});
