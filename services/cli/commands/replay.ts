// `causeway replay <capability> --version <candidate> (--flows … | --since …)`: shadow replay (services/cli/
// replay.ts). Recorded inputs of a capability, verified, re-run through a candidate version's handler in this
// process with its outputs captured — nothing published, no KV written — and compared with what was recorded.
import { ConfigError, DEFAULT_NATS_URL, ErrorCode, loadLayout, openTrustStore } from "../../kit/index.ts";
import { REPLAY_HANDLER_TIMEOUT_MS, loadVersion, replay, type Difference, type Outcome, type ReplayReport, type ReplayedInput } from "../replay.ts";
import { parseCommand, usageError } from "../usage.ts";
import { connectAsOperator } from "../operator-request.ts";

const USAGE = `usage: causeway replay <capability> --version <version> (--flows <id,…> | --since <duration|time>) [--limit N] [--json] [--server URL]

  Shadow replay: re-runs the recorded inputs of <capability> (e.g. research.v1) — from MESH_CAP, on its subject
  and every version lane — through version <version> of the agent serving it, in this process, and prints per
  input how its outputs differ from what the mesh recorded (the outputs the version that handled it emitted, or
  its quarantine). Nothing is published and no KV key is written: the handler's outputs are captured.

  Each input is verified with the trust store before any of it is parsed; one that does not verify (forged,
  tampered, its key revoked) is reported as refused and never run. The runtime's checks come next (may its
  signer address the capability, does the version accept its type, does its data validate, the version's
  policy), then the handler, with ${REPLAY_HANDLER_TIMEOUT_MS / 1000} s to answer. Expiry is not checked: replaying old inputs is the point.

  The version's definition comes from its entry in infra/principals.json: the agent's own \`entry\` when it runs
  that version, else the entry of its "versions" (e.g. researcher@1.1.0), whose module exports its definition
  factory. Critical capabilities and definitions with sideEffects are refused (CW_ERR_REPLAY_UNSUPPORTED).

  --version V      the version to replay (required)
  --flows IDS      only the inputs of these flows (correlation ids, comma-separated)
  --since WHEN     only inputs stored since WHEN: a duration ago (90s, 15m, 2h, 7d) or an RFC 3339 time
                   (at least one of --flows and --since; both narrow together)
  --limit N        replay at most N inputs (1 to 10000, default 500); the summary says when more matched
  --json           the report as JSON (every input, both outcomes, the differences)
  --server URL     NATS server (default: $NATS_URL or ${DEFAULT_NATS_URL})

Exit status: 0 every replayed input gave the same outcome; 1 an input differed or was refused (or an error);
2 usage. Inputs with nothing recorded to compare with (not handled yet) are listed and do not change it.
Progress goes to stderr. Connects as the operator (<data>/keys/operator.nk).`;

const options = {
  version: { type: "string" }, flows: { type: "string" }, since: { type: "string" }, limit: { type: "string" },
  json: { type: "boolean", default: false }, server: { type: "string" },
} as const;

/** The longest selection of flows accepted on the command line (each flow id is at most 200 characters). */
const MAX_FLOWS = 1000;
/** How often progress is written to stderr during a long run. */
const PROGRESS_EVERY_MS = 2_000;

/** `causeway replay …`; resolves with the exit code. */
export async function run(args: string[]): Promise<number> {
  const parsed = parseCommand("replay", USAGE, args, options);
  if (parsed.exit !== undefined) return parsed.exit;
  const { values, positionals } = parsed;
  const [capability, extra] = positionals;
  if (capability === undefined) return usageError("replay", USAGE, "name the capability, e.g. research.v1");
  if (extra !== undefined) return usageError("replay", USAGE, `unexpected argument "${extra}"`);
  if (values.version === undefined) return usageError("replay", USAGE, "--version is required: the version to replay");
  if (values.flows === undefined && values.since === undefined) return usageError("replay", USAGE, "say which inputs: --flows, --since, or both");
  const flows = values.flows === undefined ? undefined : new Set(values.flows.split(",").map((f) => f.trim()).filter((f) => f !== ""));
  if (flows !== undefined && (flows.size === 0 || flows.size > MAX_FLOWS)) return usageError("replay", USAGE, `--flows needs 1 to ${MAX_FLOWS} correlation ids`);
  let since: Date | undefined;
  if (values.since !== undefined) {
    since = parseSince(values.since);
    if (since === undefined) return usageError("replay", USAGE, `--since ${values.since} is neither a duration (90s, 15m, 2h, 7d) nor an RFC 3339 time`);
  }
  const limit = values.limit === undefined ? 500 : Number(values.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) return usageError("replay", USAGE, `--limit ${values.limit} is not a whole number from 1 to 10000`);

  const layout = loadLayout();
  // The version first: a capability or version that does not exist is the command line's fault.
  let loaded;
  try {
    loaded = await loadVersion(layout, capability, values.version);
  } catch (err) {
    if (err instanceof ConfigError && (err.code === ErrorCode.UnknownCapability || err.code === ErrorCode.UnknownVersion)) return usageError("replay", USAGE, `${err.message} (${err.code})`);
    throw err;
  }
  const nc = await connectAsOperator(values.server, "replay");
  const interrupted = new AbortController();
  const onSignal = () => interrupted.abort();
  process.once("SIGINT", onSignal);
  try {
    const trust = await openTrustStore(nc);
    try {
      let last = Date.now();
      const report = await replay({
        nc, trust, layout, capability, loaded, selection: { ...(flows && { flows }), ...(since && { since }), limit }, signal: interrupted.signal,
        onProgress(done, differing) {
          if (Date.now() - last < PROGRESS_EVERY_MS) return;
          last = Date.now();
          process.stderr.write(`… replayed ${done} input${done === 1 ? "" : "s"} (${differing} not the same)\n`);
        },
      });
      if (values.json) console.log(JSON.stringify(report, null, 2));
      else console.log(render(report, { flows, since }));
      if (report.summary.replayed === 0) process.stderr.write(`causeway replay: no recorded input of ${capability} matched${report.summary.undecodable > 0 ? ` (${report.summary.undecodable} messages did not decode)` : ""}\n`);
      if (report.summary.truncated) process.stderr.write(`causeway replay: stopped at --limit ${limit}; more inputs matched (narrow --since or --flows, or raise --limit)\n`);
      return report.summary.differs + report.summary.refused > 0 ? 1 : 0;
    } finally {
      await trust.close();
    }
  } finally {
    process.off("SIGINT", onSignal);
    await nc.drain().catch(() => nc.close());
  }
}

/** A time `text` ago (`90s`, `15m`, `2h`, `7d`) or an RFC 3339 time; undefined when it is neither. */
export function parseSince(text: string, now = Date.now()): Date | undefined {
  const d = /^(\d{1,9})(s|m|h|d)$/.exec(text);
  if (d) return new Date(now - Number(d[1]) * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[d[2] as "s" | "m" | "h" | "d"]);
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(text)) return undefined;
  const t = Date.parse(text);
  return Number.isNaN(t) ? undefined : new Date(t);
}

/**
 * Text the terminal shows as it is: recorded data is anyone's (a signed input's producer chose it), so control
 * characters — an escape sequence could rewrite the screen — are shown escaped, as JSON would.
 */
function safe(value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value) ?? String(value);
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** A value in a difference line: strings quoted, long values cut. */
function shownValue(value: unknown): string {
  const text = safe(typeof value === "string" && !value.startsWith("(") ? JSON.stringify(value) : value);
  return text.length > 160 ? `${text.slice(0, 159)}…` : text;
}

const MARK: Record<ReplayedInput["result"], string> = { same: "✓ same     ", differs: "✗ differs  ", refused: "! refused  ", unrecorded: "? unrecorded" };

function outcomeText(o: Outcome & { version?: string | null }): string {
  const by = o.version ? ` by ${o.version}` : "";
  switch (o.kind) {
    case "outputs": return `${o.outputs.length} output${o.outputs.length === 1 ? "" : "s"}${by}`;
    case "quarantined": return `quarantined${by} (${o.reason})`;
    case "failed": return `failed${by}`;
    case "none": return "nothing recorded";
  }
}

/** The report as lines: a header, one block per input, a summary. */
function render(report: ReplayReport, selection: { flows: ReadonlySet<string> | undefined; since: Date | undefined }): string {
  const { capability, candidate, inputs, summary } = report;
  const chosen = [selection.flows && `${selection.flows.size} flow${selection.flows.size === 1 ? "" : "s"}`, selection.since && `since ${selection.since.toISOString()}`].filter(Boolean).join(", ");
  const lines = [`replay of ${capability}: candidate ${candidate.version} (${candidate.service}, ${candidate.entry}) against the recorded outcomes; inputs: ${chosen}`, ""];
  for (const i of inputs) {
    const head = `${MARK[i.result]} ${safe(i.input.type)} ${safe(i.input.id)}  flow ${safe(i.input.flow)}  seq ${i.input.seq}`;
    if (i.result === "refused") {
      lines.push(`${head}\n    not run: ${safe(i.refused!.message)} (${i.refused!.code})`);
      continue;
    }
    lines.push(`${head}\n    recorded: ${outcomeText(i.recorded!)}; candidate ${candidate.version}: ${outcomeText(i.candidate!)}`);
    if (i.candidate!.kind === "failed") lines.push(`    candidate error: ${safe(i.candidate!.error)}`);
    for (const d of i.differences) lines.push(differenceLine(d));
  }
  const parts = [`${summary.same} same`, `${summary.differs} differ${summary.differs === 1 ? "s" : ""}`, `${summary.refused} refused`, ...(summary.unrecorded > 0 ? [`${summary.unrecorded} with nothing recorded`] : [])];
  lines.push("", `${summary.replayed} input${summary.replayed === 1 ? "" : "s"} replayed: ${parts.join(", ")}${summary.truncated ? " (stopped at --limit)" : ""}; nothing was published`);
  return lines.join("\n");
}

function differenceLine(d: Difference): string {
  return `      ${safe(d.at)}: ${shownValue(d.recorded)} → ${shownValue(d.candidate)}`;
}
