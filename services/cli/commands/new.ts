// `causeway new agent`: scaffold an agent — its folder, its test, schema stubs, its capability and principal in
// infra/principals.json — then print the commands that run it (services/cli/scaffold.ts does the work).
import { join, relative } from "node:path";
import { repoRoot } from "../nats-process.ts";
import { ScaffoldUsageError, nextSteps, planAgent, writePlan } from "../scaffold.ts";
import { table } from "../table.ts";
import { parseCommand, usageError as sharedUsageError } from "../usage.ts";
import { schemaLockPath } from "../../kit/ops/index.ts";

const USAGE = `usage: causeway new agent <name> --capability <capability>.v<major> --emits <type> [--emits <type> …]
                         [--subscribes <type>.v<major> …] [--accepts <type>[.v<major>] …] [--description TEXT] [--dry-run]

Writes a new agent, ready to run, and prints the commands that add it to a running mesh:
  services/agents/<name>/definition.ts, config.ts, main.ts   the agent (main.ts runs it with runAgentProcess)
  test/agents/<name>.test.ts                                 its test on a real nats-server; it passes as generated
  schemas/<domain>/<type>.v1.json                            a stub for each emitted type without a schema, locked
  infra/principals.json                                      the capability and the principal (role agent, its entry)

  <name>          the agent, its principal and its micro service: one lowercase token (summarizer, fact-checker)
  --capability    the capability it serves, e.g. summarize.v1 (an agent serves exactly one)
  --subscribes    a fact it reacts to, <type>.v<major> (e.g. report.published.v1): a durable of its own on MESH_EVT
  --emits         a type it emits, as a fact on <prefix>.evt.<type>.v<major>; a type without a schema gets a stub
  --accepts       a type its capability accepts (default: the facts it subscribes to); it must have a schema
  --description   one line for principals.json and \`nats micro ls\`
  --dry-run       print what it would write, write nothing

Repeat a flag or separate values with commas. Nothing is overwritten: when any file, the principal or the
capability's consumer exists, nothing is written (CW_ERR_SCAFFOLD_EXISTS).`;

/** Runs `causeway new <args>`; resolves with the exit code. */
export function run(args: string[]): Promise<number> {
  const parsed = parseCommand("new", USAGE, args, {
    capability: { type: "string" },
    subscribes: { type: "string", multiple: true },
    emits: { type: "string", multiple: true },
    accepts: { type: "string", multiple: true },
    description: { type: "string" },
    "dry-run": { type: "boolean", default: false },
  });
  if (parsed.exit !== undefined) return Promise.resolve(parsed.exit);
  const { values, positionals } = parsed;
  const [kind, name, ...rest] = positionals;
  if (kind !== "agent") return Promise.resolve(usageError(kind === undefined ? "missing what to create: new agent <name>" : `causeway new makes agents only, got "${kind}"`));
  if (name === undefined) return Promise.resolve(usageError("name the agent: new agent <name>"));
  if (rest.length > 0) return Promise.resolve(usageError(`unexpected argument "${rest[0]}" (repeat a flag, or separate values with commas)`));
  if (values.capability === undefined) return Promise.resolve(usageError("--capability <capability>.v<major> is required: an agent serves one capability"));
  const list = (v: string[] | undefined) => v?.flatMap((x) => x.split(",")).map((x) => x.trim()).filter((x) => x !== "");
  if (values.description !== undefined && values.description.trim() === "") return Promise.resolve(usageError("--description must not be empty"));
  let plan;
  try {
    plan = planAgent({
      root: repoRoot, name, capability: values.capability, emits: list(values.emits) ?? [],
      ...(values.subscribes !== undefined && { subscribes: list(values.subscribes) }),
      ...(values.accepts !== undefined && { accepts: list(values.accepts) }),
      ...(values.description !== undefined && { description: values.description.trim() }),
    });
  } catch (err) {
    if (err instanceof ScaffoldUsageError) return Promise.resolve(usageError(err.message));
    throw err;
  }
  const rel = (p: string) => relative(process.cwd(), join(plan.root, p)) || p;
  const rows = plan.files.map((f) => [f.mode === "create" ? "+" : "~", rel(f.path), f.what]);
  if (values["dry-run"]) {
    console.log(`would write the ${name} agent (--dry-run: nothing written):`);
    console.log(indent(table(["", "FILE", "WHAT"], [...rows, ...lockRows(plan.root, plan.stubs, rel)])));
    for (const w of plan.warnings) console.log(`! ${w}`);
    console.log(`\n${nextSteps(plan)}`);
    return Promise.resolve(0);
  }
  const written = writePlan(plan);
  console.log(`✓ wrote the ${name} agent:`);
  console.log(indent(table(["", "FILE", "WHAT"], [...rows, ...lockRows(plan.root, written.locked, rel)])));
  for (const w of plan.warnings) console.log(`! ${w}`);
  console.log(`\n${nextSteps(plan)}`);
  return Promise.resolve(0);
}

function lockRows(root: string, ids: readonly string[], rel: (p: string) => string): string[][] {
  return ids.length === 0 ? [] : [["~", rel(relative(root, schemaLockPath(join(root, "schemas")))), `locks ${ids.join(", ")}`]];
}

function indent(text: string): string {
  return text.split("\n").map((l) => `  ${l}`).join("\n");
}

function usageError(problem: string): number {
  return sharedUsageError("new", USAGE, problem);
}
