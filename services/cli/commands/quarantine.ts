// `causeway quarantine ls|show|release|reject`: an operator inspects and settles quarantined messages. Each
// subcommand is one request, as the operator principal, to the coordinator's endpoint
// mesh.ctl.coordinator.quarantine-<action>; the same requests work with `nats req`. Release and reject are
// signed decisions the coordinator publishes; the command prints the decision id.
import { connectAs, controlRequest, isCausewayError } from "../../kit/index.ts";
import {
  quarantineList, quarantineReject, quarantineRelease, quarantineShow,
  type ListReply, type ListRequest, type QuarantineDetail, type SettleRequest,
} from "../../coordinator/contract.ts";
import { operatorName, parseCommand, usageError as sharedUsageError } from "../usage.ts";
import { table } from "../table.ts";

const USAGE = `usage: causeway quarantine ls [--reason R] [--capability C] [--status S] [--since T] [--until T] [--limit N] [--json]
       causeway quarantine show <seq> [--json]
       causeway quarantine release <seq> [--note text] [--operator NAME] [--json]
       causeway quarantine reject <seq> [--note text] [--operator NAME] [--json]

Requests to the coordinator (mesh.ctl.coordinator.quarantine-list|show|release|reject) as the operator
principal. <seq> is the entry's sequence in MESH_QUARANTINE (the SEQ column of ls).

  ls               the newest entries (default 100) with their reason and status: open, released or rejected
  show             one entry: reason headers, original headers and data, and whether it verifies now
  release          re-verify the original and republish its bytes to the original subject; refused
                   (CW_ERR_RELEASE_REFUSED) when it would fail again
  reject           settle the entry for good: it will never be processed

  --reason R       only this reason (max_deliveries, bad_signature, schema_violation, …)
  --capability C   only this capability (the last token of mesh.quarantine.<reason>.<capability>)
  --status S       only open, released or rejected entries
  --since T        detected at or after T: RFC 3339 time, a date, or an age such as 30m, 2h, 7d
  --until T        detected before T (same forms)
  --limit N        at most N entries, the newest (default 100)
  --note text      why, recorded in the signed decision
  --operator NAME  who asks, recorded in the signed decision (default: $CAUSEWAY_OPERATOR or your login name)
  --server URL     NATS server (default: $NATS_URL or nats://127.0.0.1:4222)
  --json           print the coordinator's JSON reply`;

const options = {
  reason: { type: "string" }, capability: { type: "string" }, status: { type: "string" }, since: { type: "string" }, until: { type: "string" },
  limit: { type: "string" }, note: { type: "string" }, operator: { type: "string" }, server: { type: "string" }, json: { type: "boolean", default: false },
} as const;

const SUBCOMMANDS = ["ls", "show", "release", "reject"] as const;
type Sub = (typeof SUBCOMMANDS)[number];
const REQUEST_TIMEOUT_MS = 15_000;

/** Runs `causeway quarantine <args>`; resolves with the exit code. */
export async function run(args: string[]): Promise<number> {
  const parsed = parseCommand("quarantine", USAGE, args, options);
  if (parsed.exit !== undefined) return parsed.exit;
  const { values, positionals } = parsed;
  const [sub, ...rest] = positionals;
  if (sub === undefined) return usageError("missing subcommand");
  if (!(SUBCOMMANDS as readonly string[]).includes(sub)) return usageError(`unknown subcommand "${sub}"`);
  const action = sub as Sub;

  let list: ListRequest = {};
  let seq = 0;
  if (action === "ls") {
    if (rest.length > 0) return usageError(`ls takes no arguments, got "${rest.join(" ")}"`);
    const body: { -readonly [K in keyof ListRequest]: ListRequest[K] } = {};
    if (values.reason !== undefined) body.reason = values.reason;
    if (values.capability !== undefined) body.capability = values.capability;
    if (values.status !== undefined) {
      if (values.status !== "open" && values.status !== "released" && values.status !== "rejected") return usageError(`--status must be open, released or rejected, got "${values.status}"`);
      body.status = values.status;
    }
    for (const name of ["since", "until"] as const) {
      if (values[name] === undefined) continue;
      const t = timeArg(values[name]);
      if (t === undefined) return usageError(`--${name} must be an RFC 3339 time, a date or an age such as 30m, 2h, 7d; got "${values[name]}"`);
      body[name] = t;
    }
    if (values.limit !== undefined) {
      if (!/^[1-9][0-9]*$/.test(values.limit)) return usageError(`--limit must be a positive integer, got "${values.limit}"`);
      body.limit = Number(values.limit);
    }
    list = body;
  } else {
    if (rest.length !== 1 || !/^[1-9][0-9]*$/.test(rest[0]!)) return usageError(`${action} takes one quarantine sequence (a positive integer)`);
    seq = Number(rest[0]);
  }
  const settle = (): SettleRequest => ({ seq, operator: operatorName(values.operator), ...(values.note !== undefined && { note: values.note }) });

  const nc = await connectAs("operator", values.server ? { servers: values.server } : {});
  const opts = { timeout: REQUEST_TIMEOUT_MS };
  const print = (reply: unknown, lines: () => readonly string[]) => {
    for (const line of values.json ? [JSON.stringify(reply, null, 2)] : lines()) console.log(line);
  };
  try {
    switch (action) {
      case "ls": {
        const reply = await controlRequest(nc, quarantineList, list, opts);
        print(reply, () => [renderList(reply)]);
        break;
      }
      case "show": {
        const reply = await controlRequest(nc, quarantineShow, { seq }, opts);
        print(reply, () => [renderDetail(reply)]);
        break;
      }
      case "release": {
        const r = await controlRequest(nc, quarantineRelease, settle(), opts);
        print(r, () => [
          `✓ released quarantine entry ${r.seq}: the original bytes republished to ${r.subject} (${r.republished.stream} #${r.republished.seq}${r.republished.duplicate ? ", already there" : ""})`,
          `  decision ${r.decisionId} (decision.release, signed by the coordinator)`,
        ]);
        break;
      }
      case "reject": {
        const r = await controlRequest(nc, quarantineReject, settle(), opts);
        print(r, () => [
          `✓ rejected quarantine entry ${r.seq}: it will not be processed`,
          `  decision ${r.decisionId} (decision.rejection, signed by the coordinator)`,
        ]);
        break;
      }
    }
    return 0;
  } catch (err) {
    if (!isCausewayError(err)) throw err;
    console.error(`causeway quarantine ${action}: ${err.message} (${err.code})`);
    return 1;
  } finally {
    await nc.close();
  }
}

/** RFC 3339, a date, or an age (`90s`, `30m`, `2h`, `7d`) turned into the time that long ago. */
function timeArg(value: string, now = Date.now()): string | undefined {
  const age = /^([0-9]+)([smhd])$/.exec(value);
  if (age) return new Date(now - Number(age[1]) * { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[age[2] as "s" | "m" | "h" | "d"]).toISOString();
  return /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?$/i.test(value) && !Number.isNaN(Date.parse(value)) ? value : undefined;
}

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

function renderList({ entries, matched }: ListReply): string {
  if (entries.length === 0) return "no quarantine entries match";
  const rows = entries.map((e) => [
    String(e.seq), e.detectedAt.replace(/\.\d+Z$/, "Z"), e.reason, e.capability, e.status, e.eventType ?? "-", clip(e.detail, 70),
  ]);
  const shown = entries.length === matched ? `${matched} ${matched === 1 ? "entry" : "entries"}` : `the newest ${entries.length} of ${matched} matching entries`;
  return `${table(["SEQ", "DETECTED", "REASON", "CAPABILITY", "STATUS", "EVENT TYPE", "DETAIL"], rows)}\n\n${shown}`;
}

function renderDetail(d: QuarantineDetail): string {
  const e = d.entry;
  const field = (name: string, value: string) => `  ${name.padEnd(13)}${value}`;
  const lines = [
    `quarantine entry ${e.seq} — ${e.status}${e.decision ? ` by ${e.decision.operator} at ${e.decision.at} (decision ${e.decision.id}${e.decision.note ? `: ${e.decision.note}` : ""})` : ""}`,
    field("reason", `${e.reason}${e.code ? ` (${e.code})` : ""}`),
    field("detail", e.detail),
    field("detected", `${e.detectedAt} by ${e.detectedBy}`),
    field("original", `${e.originalSubject} (${e.originalStream} #${e.originalSeq ?? "?"})${e.consumer ? `, consumer ${e.consumer}` : ""}`),
    field("event", e.eventId ? `${e.eventType ?? "?"} ${e.eventId}` : "- (does not decode as a CloudEvent)"),
    field("verifies now", d.verification.ok ? `✓ signed by ${d.verification.principal} (${d.verification.keyid})` : `✗ ${d.verification.code ? `${d.verification.code}: ` : ""}${d.verification.message}`),
    field("release", d.release.ok ? (e.status === "open" ? "would be accepted" : "-") : `would be refused: ${d.release.code ? `${d.release.code}: ` : ""}${d.release.message}`),
    "",
    "original headers",
    // Signatures run to a kilobyte of base64; --json has every byte.
    ...Object.entries(d.headers).flatMap(([name, values]) => values.map((v) => `  ${name}: ${v.length > 100 ? `${v.slice(0, 99)}… (${v.length} characters)` : v}`)),
    "",
    `data (${d.dataBytes} bytes${d.dataEncoding === "base64" ? ", not UTF-8: base64" : ""})`,
    ...d.data.split("\n").map((line) => `  ${line}`),
  ];
  return lines.join("\n");
}

function usageError(problem: string): number {
  return sharedUsageError("quarantine", USAGE, problem);
}
