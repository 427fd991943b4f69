// A mesh with the gateway running as a process, as operators run it: the operated mesh of e2e-fixture (rendered
// least-privilege accounts, streams, buckets, trust store), the upstreams' development tokens, and
// services/gateway/main.ts on a free HTTP port, found through its micro service metadata.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Svcm } from "@nats-io/services";
import type { NatsConnection } from "@nats-io/transport-node";
import { NatsBinding, devTokenPath, seedPath, type CloudEvent } from "../services/kit/index.ts";
import { ensureDevTokens } from "../services/cli/commands/tokens.ts";
import { readMessages } from "../services/cli/flow.ts";
import { startOperatedMesh, type OperatedMesh, type SpawnedProcess } from "./e2e-fixture.ts";
import { repoRoot, runNats, waitFor, type CliResult } from "./harness/index.ts";

export const REQUEST_SCHEMA = "https://causeway.dev/schemas/report.requested/1.0.0";
export const DEMO_SOURCE = "https://demo.causeway.dev/requests";

export interface GatewayMesh extends AsyncDisposable {
  readonly mesh: OperatedMesh;
  readonly gateway: SpawnedProcess;
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  /** upstream-demo's bearer token. */
  readonly token: string;
  /** POST /events with upstream-demo's token (unless `authorization` is given, or `as` names another upstream with a development token). */
  post(body: string | Uint8Array, headers: Record<string, string>, as?: string): Promise<{ status: number; headers: Headers; json: Record<string, unknown> }>;
  /** The real `nats` CLI as upstream-demo (its NKey, its inbox). */
  natsAsUpstream(args: string[]): Promise<CliResult>;
  /** Events on a subject of MESH_CAP (default: plan.v1's work of every priority and lane, in stream order). */
  routed(subject?: string): Promise<CloudEvent[]>;
  /** Quarantine entries: headers and data. */
  quarantined(): Promise<{ reason: string; code: string; subject: string; headers: Record<string, string>; data: string }[]>;
}

export interface GatewayMeshOptions {
  /** upstream-demo's rate limit. Default 1000/s, burst 1000. */
  rate?: { per_second: number; burst: number };
  /** Extra environment for the gateway process. */
  env?: NodeJS.ProcessEnv;
  /** Members of upstream-demo's entry in upstreams.json to replace (its priority, budget, …). */
  upstream?: Record<string, unknown>;
}

/** upstream-demo as infra/upstreams.json declares it. */
export const demoUpstream = (JSON.parse(readFileSync(join(repoRoot, "infra", "upstreams.json"), "utf8")) as {
  upstreams: Record<string, { priority?: { default: string }; budget?: { cost?: number; tokens?: number; steps?: number; deadlineMs?: number } }>;
}).upstreams["upstream-demo"]!;

/**
 * The flow control a signed upstream-demo event must carry itself (the gateway cannot add to it): its priority, its
 * whole budget at the caps, and a deadline within the upstream's.
 */
export function demoFlowControl(now = Date.now()): Record<string, string> {
  const b = demoUpstream.budget ?? {};
  return {
    ...(demoUpstream.priority && { priority: demoUpstream.priority.default }),
    ...(b.cost !== undefined && { budgetcost: String(b.cost) }),
    ...(b.tokens !== undefined && { budgettokens: String(b.tokens) }),
    ...(b.steps !== undefined && { budgetsteps: String(b.steps) }),
    ...(b.deadlineMs !== undefined && { expirytime: new Date(now + b.deadlineMs / 2).toISOString() }),
  };
}

/** A request body as the demo sends it. */
export function requestData(topic = "Grid-scale battery storage"): string {
  return JSON.stringify({ topic, requester: "analyst@example.com", questions: ["Which chemistries lead?", "What does a MWh cost?"] });
}

export async function startGatewayMesh(opts: GatewayMeshOptions = {}): Promise<GatewayMesh> {
  const mesh = await startOperatedMesh();
  try {
    ensureDevTokens(mesh.dataDir);
    const upstreams = JSON.parse(readFileSync(join(repoRoot, "infra", "upstreams.json"), "utf8")) as { upstreams: Record<string, Record<string, unknown>> };
    Object.assign(upstreams.upstreams["upstream-demo"]!, { rate: opts.rate ?? { per_second: 1000, burst: 1000 }, ...opts.upstream });
    const upstreamsPath = join(mesh.dataDir, "upstreams.json");
    writeFileSync(upstreamsPath, JSON.stringify(upstreams));
    const gateway = mesh.spawn("services/gateway/main.ts", { CAUSEWAY_GATEWAY_PORT: "0", CAUSEWAY_UPSTREAMS: upstreamsPath, ...opts.env });
    const url = await gatewayUrl(mesh.operator, gateway);
    const token = readFileSync(devTokenPath(mesh.dataDir, "upstream-demo"), "utf8").trim();
    return {
      mesh, gateway, url, token,
      async post(body, headers, as) {
        const bearer = as === undefined ? token : readFileSync(devTokenPath(mesh.dataDir, as), "utf8").trim();
        const res = await fetch(`${url}/events`, { method: "POST", body, headers: { authorization: `Bearer ${bearer}`, ...headers } });
        const text = await res.text();
        return { status: res.status, headers: res.headers, json: JSON.parse(text) as Record<string, unknown> };
      },
      natsAsUpstream: (args) => runNats(["--inbox-prefix", "_INBOX_upstream-demo", ...args], { server: mesh.server.url, nkey: seedPath("upstream-demo", mesh.dataDir) }),
      async routed(subject?: string) {
        const filters = subject === undefined ? ["mesh.cap.plan.v1", "mesh.cap.plan.v1.>"] : [subject];
        const stored = (await Promise.all(filters.map((f) => readMessages(mesh.operator, "MESH_CAP", f)))).flat().sort((a, b) => a.seq - b.seq);
        return stored.map((m) => NatsBinding.toEvent(m));
      },
      async quarantined() {
        return (await readMessages(mesh.operator, "MESH_QUARANTINE")).map((m) => {
          const headers: Record<string, string> = {};
          for (const [k, v] of m.headers ?? []) headers[k] = v[0]!;
          return { reason: headers["Causeway-Quarantine-Reason"]!, code: headers["Causeway-Quarantine-Code"]!, subject: m.subject, headers, data: Buffer.from(m.data).toString("utf8") };
        });
      },
      async [Symbol.asyncDispose]() {
        gateway.child.kill("SIGTERM");
        await gateway.exited;
        await mesh[Symbol.asyncDispose]();
      },
    };
  } catch (err) {
    await mesh[Symbol.asyncDispose]();
    throw err;
  }
}

/** The gateway's HTTP URL from its micro service metadata, once it answers discovery. */
async function gatewayUrl(nc: NatsConnection, gateway: SpawnedProcess): Promise<string> {
  const client = new Svcm(nc).client({ strategy: "timer", maxWait: 300 });
  const exited = new AbortController();
  void gateway.exited.then(() => exited.abort(new Error(`the gateway exited:\n${gateway.output()}`)));
  return waitFor(async () => {
    for await (const info of await client.info("gateway")) return info.metadata?.http;
    return undefined;
  }, { what: "the gateway's micro service", timeoutMs: 20_000, signal: exited.signal });
}
