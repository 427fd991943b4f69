// `causeway demo`: the mesh end to end with embedded defaults, then everything stops. For now (foundation
// issue): identities and permissions rendered into a real nats-server, streams applied, a signed
// `report.requested` published by the gateway and consumed, verified and validated by the planner under its
// own identity, and `nats stream ls` run with the real CLI.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  NatsBinding, applyStreams, capabilityConsumerConfig, capabilityDurable, capabilitySubject, connectAs, createEvent, createKeyring,
  createSchemaRegistry, dataDir, defaultStreamsDir, inboxPrefix, loadPrincipals, loadStreamDefinitions, newTraceparent, publicKeyOf,
  readSeed, seedPath, signEvent, signingKeyFromNkeySeed, uuidv7, verificationKeyFromNkey, verifyEvent,
} from "../../kit/index.ts";
import { renderInfra } from "./infra.ts";
import { createSeed } from "./keys.ts";
import { natsBinary, spawnNatsServer, type NatsProcess } from "../nats-process.ts";
import { step } from "../progress.ts";

const REQUEST_SCHEMA = "https://causeway.dev/schemas/report.requested/1.0.0";

export async function run(args: string[]): Promise<number> {
  if (args.length > 0) {
    console.error("usage: causeway demo (CW_ERR_USAGE)");
    return 2;
  }
  const started = performance.now();
  const data = dataDir();
  const demoDir = join(data, "demo");
  let server: NatsProcess | undefined;
  const connections: NatsConnection[] = [];
  console.log("Causeway demo — a signed CloudEvent through a real nats-server, verified by another principal\n");
  try {
    const principals = loadPrincipals();
    await step("identities", () => {
      let created = 0;
      for (const name of Object.keys(principals.principals)) {
        if (!existsSync(seedPath(name, data))) {
          createSeed(name, { dir: data });
          created++;
        }
      }
      return created;
    }, (created) => `${Object.keys(principals.principals).length} principals, ${created} new NKey seeds in ${join(data, "keys")}`);

    const config = await step("nats-server config", () => {
      const rendered = renderInfra({ dataDir: data });
      rmSync(demoDir, { recursive: true, force: true });
      mkdirSync(demoDir, { recursive: true });
      const path = join(demoDir, "server.conf");
      writeFileSync(path, [
        `server_name: causeway_demo`,
        `listen: "127.0.0.1:-1"`,
        `http: "127.0.0.1:-1"`,
        `jetstream { store_dir: "${join(demoDir, "store")}" }`,
        // 1 MiB of event data plus CloudEvents headers must fit in one message.
        `max_payload: 2MB`,
        rendered.text,
      ].join("\n") + "\n");
      return { path, accounts: rendered.accounts };
    }, (c) => `accounts ${Object.entries(c.accounts).map(([a, users]) => `${a} (${users.length} users)`).join(", ")}, least-privilege permissions`);

    server = await step("nats-server", () => spawnNatsServer({ configPath: config.path, portsDir: demoDir }), (s) => `${version()} on ${s.url}`);
    const url = server.url;

    const operator = await connectAs("operator", { servers: url });
    connections.push(operator);
    const jsm = await jetstreamManager(operator);
    await step("streams", async () => applyStreams(jsm, await loadStreamDefinitions(defaultStreamsDir)), (r) => summarizeApply(r));
    const durable = capabilityDurable("plan", 1);
    await step(`capability consumer ${durable}`, async () => jsm.consumers.add("MESH_CAP", await capabilityConsumerConfig("plan", 1)));

    // The gateway signs with its own NKey: its NATS identity and its signing identity are one key.
    const gateway = await connectAs("gateway", { servers: url });
    connections.push(gateway);
    const gatewayKey = signingKeyFromNkeySeed(readSeed("gateway", data));
    const event = signEvent(createEvent({
      id: uuidv7(), source: "causeway://gateway", type: "report.requested", time: new Date().toISOString(),
      datacontenttype: "application/json", dataschema: REQUEST_SCHEMA,
      extensions: { traceparent: newTraceparent() },
      data: JSON.stringify({ topic: "Grid-scale battery storage in 2026", requester: "analyst@example.com", questions: ["Which chemistries lead?", "What does a MWh cost?"] }),
    }), gatewayKey);
    const subject = capabilitySubject("plan", 1);
    const ack = await step(`gateway publishes report.requested on ${subject}`, () => {
      const { headers, data: payload } = NatsBinding.binary(event);
      return jetstream(gateway).publish(subject, payload, { headers, msgID: event.id });
    }, (a) => `${a.stream} seq ${a.seq}, keyid ${gatewayKey.keyid.slice(0, 12)}…`);

    // The planner trusts the public keys of the mesh's principals (the live KV trust store comes next).
    const planner = await connectAs("planner", { servers: url });
    connections.push(planner);
    const keyring = createKeyring(Object.keys(principals.principals).map((name) => verificationKeyFromNkey(publicKeyOf(name, data))));
    const schemas = createSchemaRegistry();
    const verified = await step(`planner consumes ${durable}, verifies and validates`, async () => {
      const msg = await (await jetstream(planner).consumers.get("MESH_CAP", durable)).next({ expires: 5_000 });
      if (!msg) throw new Error("no message arrived within 5 s");
      const result = verifyEvent(NatsBinding.toEvent(msg), keyring);
      schemas.validate(result.event.dataschema!, JSON.parse(Buffer.from(result.event.data).toString("utf8")));
      msg.ack();
      return { result, seq: msg.seq };
    }, (v) => `stream seq ${v.seq}`);
    printEvent(verified.result, principalOf(verified.result.verification.keyid, principals, data), ack.seq);

    // Each principal may only receive replies on its own inbox prefix, the CLI included.
    const cliArgs = ["--server", url, "--nkey", seedPath("operator", data), "--inbox-prefix", inboxPrefix("operator"), "stream", "ls"];
    console.log(`\n$ nats ${cliArgs.join(" ").replace(url, "$NATS_URL").replace(data, "$CAUSEWAY_DATA_DIR")}`);
    console.log(execFileSync(natsBinary("nats"), cliArgs, { encoding: "utf8", env: { ...process.env, NO_COLOR: "1" } }));
    console.log(`demo complete in ${((performance.now() - started) / 1000).toFixed(1)} s — run \`make up\` to keep a mesh running, \`make test\` for the suite`);
    return 0;
  } catch (err) {
    console.error(`\ndemo failed: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  } finally {
    for (const nc of connections) await nc.close().catch(() => undefined);
    if (server) await server.stop();
  }
}

function version(): string {
  return execFileSync(natsBinary("nats-server"), ["--version"], { encoding: "utf8" }).trim();
}

function summarizeApply(report: Awaited<ReturnType<typeof applyStreams>>): string {
  if (!report.ok) throw new Error(report.results.filter((r) => r.status === "refused").map((r) => `${r.name}: ${r.reason}`).join("; "));
  const count = (kind: string, status: string) => report.results.filter((r) => r.kind === kind && r.status === status).length;
  return `${count("stream", "created")} streams and ${count("consumer", "created")} consumers created, ${report.results.filter((r) => r.status === "unchanged").length} unchanged`;
}

function principalOf(keyid: string, principals: ReturnType<typeof loadPrincipals>, data: string): string {
  return Object.keys(principals.principals).find((name) => publicKeyOf(name, data) === keyid) ?? "unknown";
}

function printEvent(v: ReturnType<typeof verifyEvent>, signer: string, seq: number): void {
  const e = v.event;
  const rows: [string, string][] = [
    ["type", e.type], ["id", e.id], ["source", e.source], ["time", e.time ?? ""], ["dataschema", e.dataschema ?? ""],
    ["signed by", `${signer} (${v.verification.keyid}, ${v.verification.algorithm})`],
    ["verified", `core digest ✓, extensions ${v.verification.extensions} [${v.verification.signedExtensions.join(", ")}]`],
    ["schema", "valid ✓"], ["stream seq", String(seq)],
    ["data", Buffer.from(e.data).toString("utf8")],
  ];
  console.log("");
  for (const [k, val] of rows) console.log(`  ${k.padEnd(11)} ${val}`);
}
