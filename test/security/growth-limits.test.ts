// Issue 12, finding 8: what one principal can make the mesh hold. Quarantine reason headers are bounded where
// they are written and where the coordinator indexes them; the gateway's HTTP ingress reads no body before the
// upstream is authenticated and within its rate, keeps no unauthenticated connection open, and caps connections.
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { describe, test } from "node:test";
import { jetstream } from "@nats-io/jetstream";
import {
  NatsBinding, QUARANTINE_DETAIL_MAX_BYTES, QuarantineHeader, TRUNCATED_MARKER, createEvent, newTraceparent, publishQuarantineCopy, readSeed,
  signEvent, signingKeyFromNkeySeed, uuidv7,
} from "../../services/kit/index.ts";
import { createQuarantineOps } from "../../services/coordinator/quarantine-ops.ts";
import { readMessages } from "../../services/cli/flow.ts";
import { startCoordinator } from "../coordinator-fixture.ts";
import { startOperatedMesh } from "../e2e-fixture.ts";
import { DEMO_SOURCE, REQUEST_SCHEMA, requestData, startGatewayMesh } from "../gateway-fixture.ts";
import { waitFor } from "../harness/index.ts";

const PLAN = "mesh.cap.plan.v1";
const bytes = (s: string) => Buffer.byteLength(s, "utf8");

describe("growth limits (issue 12, finding 8)", () => {
  test("quarantine - a 1 MB detail is stored cut to its limit with a marker, and the coordinator's index keeps the bounded values of a raw entry", async () => {
    await using mesh = await startOperatedMesh();
    await using coordinator = await startCoordinator(mesh, []);
    const planner = await mesh.as("planner");
    const key = signingKeyFromNkeySeed(readSeed("planner", mesh.dataDir));
    const input = signEvent(createEvent({
      id: uuidv7(), source: "causeway://gateway", type: "report.requested", time: new Date().toISOString(), datacontenttype: "application/json",
      dataschema: REQUEST_SCHEMA, extensions: { traceparent: newTraceparent() }, data: requestData(),
    }), signingKeyFromNkeySeed(readSeed("gateway", mesh.dataDir)));
    const { headers, data } = NatsBinding.binary(input);

    // Through the kit, as an agent quarantines: a detail of 1 MB of two-byte characters.
    const detail = "é".repeat(512 * 1024);
    const ack = await publishQuarantineCopy(jetstream(planner), { subject: PLAN, stream: "MESH_CAP", seq: 7, consumer: "plan", headers, data },
      "mesh.quarantine.schema_violation.plan", { reason: "schema_violation", detail, code: "CW_ERR_SCHEMA_VIOLATION", detectedBy: "planner" }, { key });
    const stored = (await readMessages(mesh.operator, "MESH_QUARANTINE")).find((m) => m.info.streamSequence === ack.seq)!;
    const storedDetail = stored.headers!.get(QuarantineHeader.Detail);
    assert.ok(bytes(storedDetail) <= QUARANTINE_DETAIL_MAX_BYTES, `stored detail of ${bytes(storedDetail)} bytes`);
    assert.ok(storedDetail.endsWith(TRUNCATED_MARKER) && storedDetail.startsWith("éé"), storedDetail.slice(-20));

    // Raw, as an agent may publish on its quarantine subject: 7 KiB per reason header (JetStream keeps up to 64 KiB in all).
    const big = "x".repeat(7 * 1024);
    const raw = NatsBinding.binary(input).headers;
    for (const [k, v] of Object.entries({
      [QuarantineHeader.Reason]: "schema_violation", [QuarantineHeader.Detail]: big, [QuarantineHeader.Code]: big, [QuarantineHeader.DetectedBy]: big,
      [QuarantineHeader.Consumer]: big, [QuarantineHeader.OriginalStream]: big, [QuarantineHeader.OriginalSubject]: `${PLAN}.${big}`, [QuarantineHeader.DetectedAt]: big,
    })) raw.set(k, v);
    const rawSeq = (await jetstream(planner).publish("mesh.quarantine.schema_violation.plan", data, { headers: raw })).seq;

    const ops = createQuarantineOps(coordinator.deps);
    const { entries } = await ops.list({});
    const kit = entries.find((e) => e.seq === ack.seq)!;
    assert.equal(kit.detail, storedDetail, "the index keeps the stored (bounded) detail");
    const indexed = entries.find((e) => e.seq === rawSeq)!;
    assert.ok(indexed, "the raw entry is listed");
    assert.ok(bytes(indexed.detail) <= QUARANTINE_DETAIL_MAX_BYTES && indexed.detail.endsWith(TRUNCATED_MARKER), `indexed detail of ${bytes(indexed.detail)} bytes`);
    for (const field of ["code", "detectedBy", "consumer", "originalStream", "detectedAt"] as const) {
      const v = indexed[field] ?? "";
      assert.ok(bytes(v) <= 256 && v.endsWith(TRUNCATED_MARKER), `${field}: ${bytes(v)} bytes`);
    }
    assert.ok(bytes(indexed.originalSubject) <= 1024 && indexed.originalSubject.endsWith(TRUNCATED_MARKER), `originalSubject: ${bytes(indexed.originalSubject)} bytes`);
    // A cut original subject is never a release target.
    assert.equal((await ops.show(rawSeq)).release.ok, false);
  });

  test("gateway HTTP - connection cap, no body before authentication and the rate, no keep-alive for a 401", async () => {
    await using g = await startGatewayMesh({ rate: { per_second: 0.01, burst: 2 }, env: { CAUSEWAY_GATEWAY_MAX_CONNECTIONS: "4" } });
    const { hostname, port } = new URL(g.url);

    // At the cap: four open connections (idle, nothing sent); the fifth is closed as it arrives, unanswered.
    const held = await Promise.all(Array.from({ length: 4 }, () => open(hostname, Number(port))));
    const fifth = await open(hostname, Number(port));
    await waitFor(() => fifth.closed, { what: "the fifth connection closed by the gateway" });
    assert.equal(fifth.received(), "", "nothing answered on a refused connection");
    assert.ok(held.every((c) => !c.closed), "the four under the cap stay open");
    for (const c of held) c.socket.destroy();
    // Once they are gone, connections are taken again.
    await waitFor(() => fetch(`${g.url}/health`).then((r) => r.ok), { what: "a connection under the cap" });

    // A 401 answers at once, without the (1 MB, unsent) body, and closes the connection.
    const anonymous = await open(hostname, Number(port));
    anonymous.socket.write(head({ "content-type": "application/json", "content-length": "1000000" }) + "{");
    await waitFor(() => anonymous.closed, { what: "the unauthenticated connection closed" });
    assert.match(anonymous.received(), /^HTTP\/1\.1 401 /);
    assert.match(anonymous.received(), /\r\nconnection: close\r\n/i);

    // A 401 with its whole body: the answer says connection: close and the socket is closed (no keep-alive).
    const wrong = await open(hostname, Number(port));
    wrong.socket.write(head({ authorization: "Bearer nope", "content-type": "application/json", "content-length": "2" }) + "{}");
    await waitFor(() => wrong.closed, { what: "the bad-token connection closed" });
    assert.match(wrong.received(), /^HTTP\/1\.1 401 [^]*CW_ERR_UNAUTHENTICATED/);

    // Over its rate, an upstream's single event and batch are refused before their bodies are read.
    const binary = { "content-type": "application/json", "ce-specversion": "1.0", "ce-source": DEMO_SOURCE, "ce-type": "report.requested", "ce-dataschema": REQUEST_SCHEMA };
    for (const id of ["r-0", "r-1"]) assert.equal((await g.post(requestData(), { ...binary, "ce-id": id })).status, 202);
    for (const contentType of ["application/json", "application/cloudevents-batch+json"]) {
      const over = await open(hostname, Number(port));
      over.socket.write(head({ ...binary, "ce-id": "r-2", authorization: `Bearer ${g.token}`, "content-type": contentType, "content-length": "1000000" }) + "[");
      await waitFor(() => over.closed, { what: `the over-rate ${contentType} connection closed` });
      assert.match(over.received(), /^HTTP\/1\.1 429 [^]*CW_ERR_RATE_LIMITED/, over.received());
      assert.match(over.received(), /\r\nconnection: close\r\n/i);
    }
  });
});

function head(headers: Record<string, string>): string {
  return `POST /events HTTP/1.1\r\nhost: gateway\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("")}\r\n`;
}

interface Raw {
  readonly socket: Socket;
  readonly closed: boolean;
  received(): string;
}

/** A raw TCP connection to the gateway, recording what it answers and when it closes. */
function open(host: string, port: number): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect({ host, port });
    const raw = { socket, closed: false, received: () => Buffer.concat(chunks).toString("utf8") };
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", () => undefined); // a reset is a close here
    socket.on("close", () => { raw.closed = true; });
    socket.once("connect", () => resolve(raw));
    socket.once("error", reject);
  });
}
