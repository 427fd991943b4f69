// The permission matrix, live: every principal of infra/principals.json tries every probe of test/security/matrix.ts
// with its own seed against a nats-server running the accounts `causeway infra render` writes (streams, buckets and
// trust store applied as operators do), and each outcome must be the declared one. Blind responders registered as
// every service principal answer any request, so "request with a foreign reply" tests the server's permissions alone.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Role, loadPrincipals } from "../../services/kit/index.ts";
import { permissionsFor, subjectIntersection } from "../../services/kit/ops/index.ts";
import { startOperatedMesh, type OperatedMesh } from "../e2e-fixture.ts";
import { repoRoot, waitFor } from "../harness/index.ts";
import { ALLOWED, expected, probesFor, renderMatrix, type Probe } from "./matrix.ts";
import { outcomeOf, startBlindResponders, watchViolations, type BlindResponder, type Violations } from "./live.ts";

const principals = loadPrincipals();
const names = Object.keys(principals.principals);
const probes = probesFor(principals);

test("permission matrix - declares every principal of principals.json but agents it holds to the default row, and only known probes", () => {
  assert.deepEqual(Object.keys(ALLOWED).filter((n) => !names.includes(n)), [], "every declared row is a principal of principals.json");
  const undeclared = names.filter((n) => !Object.hasOwn(ALLOWED, n));
  assert.deepEqual(undeclared.filter((n) => principals.principals[n]!.role !== Role.Agent), [], "only agents may go undeclared (they get OTHER_AGENT)");
  const ids = new Set(probes.map((p) => p.id));
  assert.equal(ids.size, probes.length, "probe ids are unique");
  for (const [name, allowed] of Object.entries(ALLOWED)) for (const id of allowed) assert.ok(ids.has(id), `${name}: unknown probe "${id}"`);
});

test("permission matrix - docs/security.md prints the declared matrix", () => {
  const doc = readFileSync(join(repoRoot, "docs", "security.md"), "utf8");
  assert.ok(doc.includes(renderMatrix(principals)), "docs/security.md has drifted from test/security/matrix.ts: paste renderMatrix() output into it");
});

describe("permission matrix - on a server running the rendered permissions", () => {
  let mesh: OperatedMesh;
  let responders: BlindResponder[];

  before(async () => {
    mesh = await startOperatedMesh();
    responders = await startBlindResponders(principals, mesh.as);
    // One stream per principal for it to try to delete.
    const jsm = await jetstreamManager(mesh.operator);
    for (const [i] of names.entries()) await jsm.streams.add({ name: `DOOMED_${i}`, subjects: [`doomed.${i}`] });
  });

  after(async () => {
    for (const r of responders ?? []) r.violations.stop();
    await mesh?.[Symbol.asyncDispose]();
  });

  test("permission matrix - every principal, every probe, the declared outcome", async () => {
    const failures: string[] = [];
    for (const [i, name] of names.entries()) {
      const nc = await mesh.as(name);
      const violations = watchViolations(nc);
      try {
        for (const probe of probes) {
          const got = await run(probe, name, i, nc, violations);
          const want = expected(name, probe);
          if (got !== want) failures.push(`${name}: ${probe.id} was ${got}, declared ${want}`);
        }
      } finally {
        violations.stop();
        await nc.close();
      }
    }
    assert.deepEqual(failures, []);
  });

  async function run(probe: Probe, name: string, i: number, nc: NatsConnection, violations: Violations): Promise<"allowed" | "refused"> {
    switch (probe.kind) {
      case "publish":
        nc.publish(probe.subject, "probe");
        await violations.settle();
        return violations.has("publish", probe.subject) ? "refused" : "allowed";
      case "subscribe": {
        const other = names.find((n) => n !== name)!;
        const subject = probe.subject.replace("<other>", other);
        const sub = nc.subscribe(subject);
        await violations.settle();
        const refused = violations.has("subscription", subject);
        if (!refused) sub.unsubscribe();
        return refused ? "refused" : "allowed";
      }
      case "foreign-reply":
        return foreignReply(probe.bucket, probe.key, name, nc, violations);
      case "kv": {
        const key = `${probe.keyPrefix}.${probe.op}-${name}`;
        const subject = `$KV.${probe.bucket}.${key}`;
        const js = jetstream(nc);
        if (probe.op === "put") return outcomeOf(() => js.publish(subject, "probe"));
        if (probe.op === "create") return outcomeOf(() => js.publish(subject, "probe", { expect: { lastSubjectSequence: 0 } }));
        const h = natsHeaders();
        h.set("KV-Operation", "DEL");
        return outcomeOf(() => js.publish(subject, undefined, { headers: h }));
      }
      case "stream-create":
        return outcomeOf(async () => (await jetstreamManager(nc, { checkAPI: false })).streams.add({ name: `PROBE_${i}`, subjects: [`probe.${i}`] }));
      case "stream-delete":
        return outcomeOf(async () => (await jetstreamManager(nc, { checkAPI: false })).streams.delete(`DOOMED_${i}`));
      case "consumer-create":
        return outcomeOf(async () => (await jetstreamManager(nc, { checkAPI: false })).consumers.add(probe.stream, { durable_name: `probe-${i}`, filter_subject: probe.filter, ack_policy: AckPolicy.Explicit }));
    }
  }

  /**
   * A subject a pattern matches and a blind responder listens on: a wildcard is `probe`, except discovery's verb
   * (`$SRV.PING`); discovery addressed to one instance id (unknown here) is left out.
   */
  function concrete(pattern: string): string | undefined {
    const tokens = pattern.split(".");
    if (tokens[0] === "$SRV") {
      if (tokens[1] === "*" || tokens[1] === ">") tokens[1] = "PING";
      return tokens.slice(2).some((t) => t === "*" || t === ">") ? undefined : tokens.slice(0, 3).join(".");
    }
    return tokens.map((t) => (t === "*" || t === ">" ? "probe" : t)).join(".");
  }

  /**
   * Sends a request with reply subject `reply` to every subject of every service `name` may publish to (none: a
   * control subject it may not address), waits until each reachable blind responder either was refused by the
   * server or the reply landed, and says whether anything landed.
   */
  async function foreignReply(bucket: string, key: string, name: string, nc: NatsConnection, violations: Violations): Promise<"allowed" | "refused"> {
    const reply = `$KV.${bucket}.${key}`;
    const granted = permissionsFor(principals, name).publish.map((g) => g.subject);
    const targets: { subject: string; responder: BlindResponder }[] = [];
    for (const responder of responders) {
      const served = permissionsFor(principals, responder.principal).subscribe.map((g) => g.subject).filter((s) => !s.startsWith("_INBOX_"));
      for (const g of granted) {
        for (const s of served) {
          const meet = subjectIntersection(g, s);
          const subject = meet === undefined ? undefined : concrete(meet);
          if (subject !== undefined && !targets.some((t) => t.subject === subject && t.responder === responder)) targets.push({ subject, responder });
        }
      }
    }
    const kv = await new Kvm(mesh.operator).open(bucket);
    const revision = async () => (await kv.get(key))?.revision ?? 0;
    const baseline = await revision();
    const landed = async () => (await revision()) > baseline;
    if (targets.length === 0) {
      const subject = `${principals.prefix}.ctl.coordinator.status`;
      nc.publish(subject, "{}", { reply });
      await violations.settle();
      assert.ok(violations.has("publish", subject), `${name} reaches no service, yet may publish on ${subject}`);
      return (await landed()) ? "allowed" : "refused";
    }
    for (const { subject, responder } of targets) {
      const before = responder.violations.seen.length;
      nc.publish(subject, "{}", { reply });
      await nc.flush();
      await waitFor(async () => responder.violations.seen.length > before || (await landed()), { what: `${responder.principal} to answer ${name}'s request on ${subject} (refused or landed)`, timeoutMs: 5_000 });
      if (await landed()) return "allowed";
    }
    for (const r of responders) await r.violations.settle();
    return (await landed()) ? "allowed" : "refused";
  }
});
