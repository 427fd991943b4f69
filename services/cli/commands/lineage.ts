// `causeway lineage …`: the auditor's questions. Every query is one request to the lineage service
// (mesh.ctl.lineage.<operation>, the same endpoints `nats req` reaches and the HTTP API mirrors), as the
// `auditor` principal by default, which may ask lineage and nothing else. `check-proof` and `check-export`
// run offline: they need only the file and lineage's public key.
import { readFileSync, writeFileSync } from "node:fs";
import { connectAs, controlRequest, isCausewayError, publicKeyOf } from "../../kit/index.ts";
import { lineageEndpoint, type LineageOperationName } from "../../lineage/contract.ts";
import { renderTrace, renderVerify, renderWhy, renderImpact, renderEvents } from "../lineage-render.ts";
import { parseCommand, usageError as sharedUsageError } from "../usage.ts";

const USAGE = `usage: causeway lineage why <event-id> [--source URI]
       causeway lineage trace <correlation-id>
       causeway lineage impact <event-id> [--source URI]
       causeway lineage events [--agent P] [--version V] [--type T] [--stream S] [--since T] [--until T] [--failed] [--limit N] [--after I]
       causeway lineage verify
       causeway lineage prove <event-id> [--size N] [--index I] [--out FILE]
       causeway lineage consistency <from-size> [<to-size>] [--out FILE]
       causeway lineage export <correlation-id> --format jsonl|csv|prov|openlineage [--out FILE]
       causeway lineage export --since T [--until T] --format … [--out FILE]
       causeway lineage checkpoints
       causeway lineage check-proof <FILE> [--key NKEY]      (offline)
       causeway lineage check-export <FILE> [--key NKEY]     (offline)

Questions to the lineage service (mesh.ctl.lineage.<operation>), as the auditor principal.

  why            the event's causal ancestry to the upstream root: agent, key, verification, input, queue
                 wait and processing time per step (from signed timings only)
  trace          a whole flow: every event, decision and quarantine entry, the timeline, the critical path,
                 what each run spent and the flow's totals against its budget and priority (signed values only)
  impact         every event the event caused, by depth
  events         records by agent, implementation version, type, stream and time range, oldest first, in
                 pages (--after)
  verify         whole-log integrity against the signed checkpoints on MESH_AUDIT; exit 1 names the first bad entry
  prove          an inclusion proof against a signed checkpoint (the newest unless --size), as JSON
  consistency    a consistency proof between two signed checkpoints, as JSON
  export         evidence of a flow or a time range: JSONL or CSV (records, leaf hashes, inclusion proofs,
                 the signed checkpoint), W3C PROV-JSON, OpenLineage run events
  checkpoints    the signed checkpoints lineage published
  check-proof    verify a proof file offline with lineage's public key
  check-export   verify a JSONL or CSV export offline with lineage's public key

  --key NKEY     lineage's public key (default: the one in the data directory's keys)
  --as P         ask as principal P (default: auditor)
  --server URL   NATS server (default: $NATS_URL or nats://127.0.0.1:4222)
  --json         print the service's JSON answer`;

const options = {
  source: { type: "string" }, agent: { type: "string" }, version: { type: "string" }, type: { type: "string" }, stream: { type: "string" }, since: { type: "string" },
  until: { type: "string" }, failed: { type: "boolean", default: false }, limit: { type: "string" }, after: { type: "string" },
  size: { type: "string" }, index: { type: "string" }, out: { type: "string" }, format: { type: "string" }, key: { type: "string" },
  as: { type: "string", default: "auditor" }, server: { type: "string" }, json: { type: "boolean", default: false },
} as const;

const REQUEST_TIMEOUT_MS = 60_000;
const usageError = (problem: string) => sharedUsageError("lineage", USAGE, problem);

export async function run(args: string[]): Promise<number> {
  const parsed = parseCommand("lineage", USAGE, args, options);
  if (parsed.exit !== undefined) return parsed.exit;
  const { values, positionals } = parsed;
  const [sub, ...rest] = positionals;
  if (sub === undefined) return usageError("missing subcommand");

  if (sub === "check-proof" || sub === "check-export") {
    if (rest.length !== 1) return usageError(`${sub} takes one file`);
    return checkOffline(sub, rest[0]!, values.key);
  }

  const one = (): string | undefined => (rest.length === 1 ? rest[0] : undefined);
  let operation: LineageOperationName;
  let params: Record<string, string> = {};
  const put = (name: string, value: string | undefined) => {
    if (value !== undefined) params[name] = value;
  };
  switch (sub) {
    case "why":
    case "impact": {
      const id = one();
      if (id === undefined) return usageError(`${sub} takes one event id`);
      operation = sub;
      params = { id };
      put("source", values.source);
      break;
    }
    case "trace": {
      const correlation = one();
      if (correlation === undefined) return usageError("trace takes one correlation id");
      operation = "trace";
      params = { correlation };
      break;
    }
    case "events":
      if (rest.length > 0) return usageError("events takes options, not arguments");
      operation = "events";
      put("agent", values.agent); put("version", values.version); put("type", values.type); put("stream", values.stream); put("from", values.since); put("to", values.until);
      put("limit", values.limit); put("after", values.after);
      if (values.failed) params.failed = "true";
      break;
    case "verify":
    case "checkpoints":
      if (rest.length > 0) return usageError(`${sub} takes no arguments`);
      operation = sub;
      break;
    case "prove":
      if (rest.length > 1 || (rest.length === 0 && values.index === undefined)) return usageError("prove takes one event id (or --index I)");
      operation = "prove";
      put("id", rest[0]); put("index", values.index); put("size", values.size); put("source", values.source);
      break;
    case "consistency":
      if (rest.length < 1 || rest.length > 2) return usageError("consistency takes a from-size and optionally a to-size");
      operation = "consistency";
      put("from", rest[0]); put("to", rest[1]);
      break;
    case "export": {
      if (rest.length > 1) return usageError("export takes at most one correlation id");
      if (rest.length === 0 && values.since === undefined) return usageError("export takes a correlation id or --since");
      if (!values.format) return usageError("export needs --format jsonl|csv|prov|openlineage");
      operation = "export";
      put("correlation", rest[0]); put("from", values.since); put("to", values.until); put("format", values.format);
      break;
    }
    default:
      return usageError(`unknown subcommand "${sub}"`);
  }

  const nc = await connectAs(values.as, values.server ? { servers: values.server } : {});
  const ask = <K extends LineageOperationName>(name: K) => controlRequest(nc, lineageEndpoint(name), params, { timeout: REQUEST_TIMEOUT_MS });
  const show = <T>(result: T, render: (r: T) => string): number => {
    console.log(values.json ? JSON.stringify(result, null, 2) : render(result));
    return 0;
  };
  const write = (text: string): number => {
    if (values.out) {
      writeFileSync(values.out, text);
      console.error(`wrote ${values.out} (${Buffer.byteLength(text)} bytes)`);
    } else {
      process.stdout.write(text);
    }
    return 0;
  };
  const json = (result: unknown) => JSON.stringify(result, null, 2);
  try {
    switch (operation) {
      case "why": return show(await ask("why"), renderWhy);
      case "trace": return show(await ask("trace"), renderTrace);
      case "impact": return show(await ask("impact"), renderImpact);
      case "events": return show(await ask("events"), renderEvents);
      case "verify": {
        const report = await ask("verify");
        show(report, renderVerify);
        return report.ok ? 0 : 1;
      }
      case "prove": return write(json(await ask("prove")) + "\n");
      case "consistency": return write(json(await ask("consistency")) + "\n");
      case "export": return write((await ask("export")).body);
      case "checkpoints": return show(await ask("checkpoints"), json);
    }
  } catch (err) {
    if (!isCausewayError(err)) throw err;
    console.error(`causeway lineage ${sub}: ${err.message} (${err.code})`);
    return 1;
  } finally {
    await nc.close();
  }
}

async function checkOffline(sub: "check-proof" | "check-export", file: string, key: string | undefined): Promise<number> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    console.error(`causeway lineage ${sub}: cannot read ${file}: ${(err as Error).message}`);
    return 1;
  }
  let publicKey: string;
  try {
    publicKey = key ?? publicKeyOf("lineage");
  } catch (err) {
    console.error(`causeway lineage ${sub}: no lineage public key: pass --key (${(err as Error).message})`);
    return 2;
  }
  const { checkFile } = await import("../lineage-check.ts");
  const outcome = checkFile(sub, text, publicKey);
  console.log(outcome.message);
  return outcome.ok ? 0 : 1;
}
