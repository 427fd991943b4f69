// `causeway new agent`: everything a new agent needs, planned first and written only when every check passed —
// the agent folder (definition, config, main), its test on a real nats-server, a schema stub (locked) for each
// emitted type without a schema, the capability and the principal in infra/principals.json. The plan refuses to
// overwrite anything (CW_ERR_SCAFFOLD_EXISTS) and is validated the way the mesh will read it (the principals schema
// and checks, the schema registry, the lock) before a byte is written; a write that fails half way is undone.
import { closeSync, existsSync, openSync, readFileSync, rmSync, writeFileSync, writeSync, mkdirSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import {
  ConfigError, ErrorCode, Role, SchemaError, createSchemaRegistry, newestSchemaOf, parseFactRef, parsePrincipals, parseSchemaVersion,
  dataDir, emitsCover, inboxPrefix, schemaIdOf, seedPath, subjectsFor, type KvBucketValue,
} from "../kit/index.ts";
import { checkSchemaLock, lockSchemas, readSchemaDocuments, schemaLockPath } from "../kit/ops/index.ts";
import { exampleOf } from "./example-data.ts";
import { runDir } from "./processes.ts";
import { shown } from "./table.ts";
import {
  configTs, constName, definitionTs, mainTs, stubSchema, testTs, type AgentTemplate, type EmitRef, type InputExample, type TypeRef,
} from "./scaffold-templates.ts";

/** What to scaffold. */
export interface NewAgentOptions {
  /** The repository to write into. */
  readonly root: string;
  /** The agent's name: its folder, its principal, its micro service (a lowercase token). */
  readonly name: string;
  /** `<capability>.v<major>`, the one capability it serves. */
  readonly capability: string;
  /** Facts it reacts to, `<type>.v<major>` each. */
  readonly subscribes?: readonly string[];
  /** Types it emits (as facts on `<prefix>.evt.<type>.v<major>`); a type without a schema gets a stub. */
  readonly emits: readonly string[];
  /** Types its capability accepts (`<type>` or `<type>.v<major>`). Default: the facts it subscribes to. */
  readonly accepts?: readonly string[];
  /** One line for principals.json, the capability and `nats micro ls`. */
  readonly description?: string;
}

/** One file of the plan, relative to the root. */
export interface PlannedFile {
  readonly path: string;
  readonly content: string;
  /** `create`: must not exist; `update`: an existing file rewritten (principals.json). */
  readonly mode: "create" | "update";
  /** What it is, for the summary. */
  readonly what: string;
}

/** Everything `new agent` will write, checked. */
export interface AgentPlan {
  readonly root: string;
  readonly template: AgentTemplate;
  readonly files: readonly PlannedFile[];
  /** The stub schemas' $ids, locked after they are written. */
  readonly stubs: readonly string[];
  /** The capability was declared already (nobody served it): principals.json gains only the principal. */
  readonly capabilityExisted: boolean;
  /** Things the developer should know (an input the scaffold could not build an example of). */
  readonly warnings: readonly string[];
}

// A principal name becomes a folder, a file name, an inbox token and part of TypeScript identifiers.
const NAME = /^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$/;
const CAPABILITY = /^([a-z0-9_-]+)\.v([1-9][0-9]*)$/;
const TYPE = /^[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9][a-z0-9_-]*)+$/;
const TYPE_OR_FACT = /^(.+?)(?:\.v([1-9][0-9]*))?$/;

/** A usage problem: the command line names something malformed (exit 2). */
export class ScaffoldUsageError extends Error {}

/**
 * Checks everything and returns what `new agent` would write. Throws ScaffoldUsageError for a malformed argument,
 * ConfigError CW_ERR_SCAFFOLD_EXISTS when something it would write exists, CW_ERR_UNKNOWN_SCHEMA for an input
 * type without a schema, CW_ERR_PRINCIPALS_INVALID when the new principals.json would not load, CW_ERR_CONFIG when
 * the schema lock is not clean.
 */
export function planAgent(opts: NewAgentOptions): AgentPlan {
  const { root, name } = opts;
  if (!NAME.test(name) || name.length > 32) {
    throw new ScaffoldUsageError(`the agent's name must be one lowercase token of at most 32 characters (a letter, then letters, digits, single - or _), got ${JSON.stringify(name)}`);
  }
  const cap = CAPABILITY.exec(opts.capability);
  if (!cap) throw new ScaffoldUsageError(`--capability must be <capability>.v<major>, e.g. summarize.v1, got ${JSON.stringify(opts.capability)}`);
  const [capName, capMajor] = [cap[1]!, Number(cap[2])];
  if (opts.emits.length === 0) throw new ScaffoldUsageError("name at least one type the agent emits: --emits <type>");
  for (const type of opts.emits) {
    if (!TYPE.test(type)) throw new ScaffoldUsageError(`--emits takes an event type, two or more lowercase tokens (report.summarized), got ${JSON.stringify(type)}`);
  }
  const facts = (opts.subscribes ?? []).map((ref) => {
    const fact = parseFactRef(ref);
    if (!fact || !TYPE.test(fact.type)) throw new ScaffoldUsageError(`--subscribes takes <type>.v<major>, e.g. report.published.v1, got ${JSON.stringify(ref)}`);
    return fact;
  });
  const acceptRefs = (opts.accepts ?? (opts.subscribes ?? [])).map((ref) => {
    const m = TYPE_OR_FACT.exec(ref)!;
    if (!TYPE.test(m[1]!)) throw new ScaffoldUsageError(`--accepts takes <type> or <type>.v<major>, got ${JSON.stringify(ref)}`);
    return { type: m[1]!, major: m[2] === undefined ? undefined : Number(m[2]) };
  });
  if (acceptRefs.length === 0) {
    throw new ScaffoldUsageError(`name what ${opts.capability} accepts: --accepts <type> (a type with a schema in schemas/), or --subscribes <type>.v<major> (it then accepts those too)`);
  }
  for (const list of [opts.emits, facts.map((f) => `${f.type}.v${f.major}`), acceptRefs.map((a) => a.type)]) {
    const dup = list.find((x, i) => list.indexOf(x) !== i);
    if (dup !== undefined) throw new ScaffoldUsageError(`${dup} is named twice`);
  }

  // What exists, read once.
  const principalsPath = join(root, "infra", "principals.json");
  const schemaDir = join(root, "schemas");
  const principalsText = readFileSync(principalsPath, "utf8");
  const doc = JSON.parse(principalsText) as RawPrincipals;
  const principals = parsePrincipals(structuredClone(doc), principalsPath);
  const docs = readSchemaDocuments(schemaDir);
  const ids = docs.map((d) => d.id);
  const byId = new Map(docs.map((d) => [d.id, d]));

  // Nothing it writes may exist.
  const exists = (what: string, fix = "choose another name, or remove it first") => new ConfigError(ErrorCode.ScaffoldExists, `${what}; nothing was written (${fix})`);
  if (Object.hasOwn(principals.principals, name)) throw exists(`${relative(root, principalsPath)} already declares a principal "${name}"`);
  const serviceOwner = Object.values(principals.principals).find((p) => p.service === name);
  if (serviceOwner) throw exists(`principal ${serviceOwner.name} already registers the micro service "${name}"`);
  const folder = join("services", "agents", name);
  const testFile = join("test", "agents", `${name}.test.ts`);
  for (const path of [folder, testFile]) if (existsSync(join(root, path))) throw exists(`${path} exists`);
  const capRef = `${capName}.v${capMajor}`;
  const server = Object.values(principals.principals).find((p) => p.serves.includes(capRef));
  if (server) throw exists(`${server.name} already serves ${capRef}`, `an agent serves a capability of its own: choose another, or run more of ${server.name} with \`causeway start ${server.name} --replicas N\``);
  const capability = Object.hasOwn(principals.capabilities, capRef) ? principals.capabilities[capRef] : undefined;
  if (capability?.critical) throw exists(`${capRef} is critical`, "a critical agent claims the coordinator's leases (docs/agents.md), which this scaffold does not write: choose another capability");

  // Inputs: schemas that exist. Outputs: the newest version, or a stub.
  const unknown = (type: string, major: number | undefined) => new SchemaError(ErrorCode.UnknownSchema,
    `no schema for ${type}${major === undefined ? "" : ` v${major}`} in ${relative(process.cwd(), schemaDir) || schemaDir}: an agent reads types some producer emits; add the schema first (schemas/README.md)`);
  const inputRef = (type: string, major: number | undefined): TypeRef => {
    const id = newestSchemaOf(ids, type, major);
    if (id === undefined) throw unknown(type, major);
    return { type, dataschema: id, major: parseSchemaVersion(id)!.major };
  };
  const subscribes = facts.map((f) => inputRef(f.type, f.major));
  const accepts = acceptRefs.map((a) => inputRef(a.type, a.major ?? subscribes.find((s) => s.type === a.type)?.major));
  const emits: EmitRef[] = opts.emits.map((type) => {
    const id = newestSchemaOf(ids, type);
    if (id !== undefined) return { type, dataschema: id, major: parseSchemaVersion(id)!.major, stub: false, file: join("schemas", byId.get(id)!.name) };
    return { type, dataschema: schemaIdOf(type, "1.0.0"), major: 1, stub: true, file: join("schemas", type.split(".")[0]!, `${type}.v1.json`) };
  });
  const versions = new Map<string, string>();
  for (const r of [...accepts, ...subscribes, ...emits]) {
    const other = versions.get(r.type);
    if (other !== undefined && other !== r.dataschema) throw new ScaffoldUsageError(`${r.type} is named as ${other} and ${r.dataschema}: name one version`);
    versions.set(r.type, r.dataschema);
  }
  for (const e of emits.filter((x) => x.stub)) if (existsSync(join(root, e.file))) throw exists(`${e.file} exists without declaring ${e.dataschema}`);
  const lockProblems = checkSchemaLock(schemaDir);
  if (lockProblems.length > 0) {
    throw new ConfigError(ErrorCode.Config, `${relative(root, schemaLockPath(schemaDir))} must be clean before new schemas are locked; nothing was written:\n${lockProblems.map((p) => `  ${p.message}`).join("\n")}`);
  }

  // Example inputs for the generated test, checked against the registry the agent will validate with.
  const registry = createSchemaRegistry({ dir: schemaDir });
  const warnings: string[] = [];
  const examples: InputExample[] = [];
  for (const r of [...subscribes, ...accepts]) {
    if (examples.some((x) => x.type === r.type)) continue;
    const data = exampleOf(byId.get(r.dataschema)!.schema, (id) => byId.get(id)?.schema);
    try {
      registry.validate(r.dataschema, data);
      examples.push({ ...r, data });
    } catch (err) {
      examples.push({ ...r, data: undefined });
      warnings.push(`could not build a valid ${r.type} for the test (${(err as Error).message}): fill in ${constName(r.type)} in ${testFile}`);
    }
  }

  const description = opts.description ?? `Serves ${capRef}${subscribes.length > 0 ? `, reacts to ${subscribes.map((s) => s.type).join(", ")}` : ""}; emits ${emits.map((e) => e.type).join(", ")}`;
  const template: AgentTemplate = { name, capability: capName, major: capMajor, description, accepts, subscribes, emits, examples };

  // principals.json: the capability (unless declared) and the principal, appended, copied from a reference agent.
  const next = structuredClone(doc);
  if (!capability) next.capabilities[capRef] = { description: opts.description ?? `Work for ${name}` };
  next.principals[name] = principalEntry(doc, { name, description, capRef, subscribes: subscribes.map((s) => `${s.type}.v${s.major}`), emits: emits.map((e) => e.type) });
  parsePrincipals(structuredClone(next), `${principalsPath} (with ${name})`); // CW_ERR_PRINCIPALS_INVALID: refused before anything is written

  const files: PlannedFile[] = [
    { path: join(folder, "definition.ts"), content: definitionTs(template), mode: "create", what: "the definition: accepts, emits, the handler" },
    { path: join(folder, "config.ts"), content: configTs(template), mode: "create", what: "its configuration from the environment" },
    { path: join(folder, "main.ts"), content: mainTs(template), mode: "create", what: "the process entry (runAgentProcess)" },
    { path: testFile, content: testTs(template), mode: "create", what: "its test on a real nats-server" },
    ...emits.filter((e) => e.stub).map((e): PlannedFile => ({ path: e.file, content: stubSchema(name, e), mode: "create", what: `a stub schema, ${e.dataschema}` })),
    {
      path: relative(root, principalsPath), content: `${JSON.stringify(next, null, 2)}\n`, mode: "update",
      what: `${capability ? "" : `capability ${capRef}, `}principal ${name} (serves ${capRef}${subscribes.length > 0 ? `, subscribes ${subscribes.map((s) => `${s.type}.v${s.major}`).join(", ")}` : ""}, emits ${emits.map((e) => e.type).join(", ")})`,
    },
  ];
  return { root, template, files, stubs: emits.filter((e) => e.stub).map((e) => e.dataschema), capabilityExisted: capability !== undefined, warnings };
}

/** What {@link writePlan} did. */
export interface WrittenPlan {
  readonly files: readonly PlannedFile[];
  /** The $ids added to schemas.lock.json. */
  readonly locked: readonly string[];
}

/**
 * Writes the plan: new files exclusively (a file that appeared since the plan fails the write), principals.json
 * replaced whole, then the stubs locked with the lock function. Anything written is undone when a step fails.
 */
export function writePlan(plan: AgentPlan): WrittenPlan {
  const created: string[] = [];
  const restore: { path: string; content: string }[] = [];
  const lockPath = schemaLockPath(join(plan.root, "schemas"));
  try {
    for (const f of plan.files) {
      const path = join(plan.root, f.path);
      if (f.mode === "update") {
        restore.push({ path, content: readFileSync(path, "utf8") });
        writeFileSync(path, f.content);
        continue;
      }
      for (let dir = dirname(path); !existsSync(dir); dir = dirname(dir)) created.push(dir);
      mkdirSync(dirname(path), { recursive: true });
      const fd = openSync(path, "wx");
      created.push(path);
      try {
        writeSync(fd, f.content);
      } finally {
        closeSync(fd);
      }
    }
    let locked: string[] = [];
    if (plan.stubs.length > 0) {
      restore.push({ path: lockPath, content: readFileSync(lockPath, "utf8") });
      locked = lockSchemas(join(plan.root, "schemas"));
    }
    return { files: plan.files, locked };
  } catch (err) {
    for (const r of restore.reverse()) writeFileSync(r.path, r.content);
    // Files first, then the folders made for them, deepest first.
    for (const path of created.sort((a, b) => b.length - a.length)) rmSync(path, { recursive: true, force: true });
    if (err instanceof Error && "code" in err && err.code === "EEXIST") {
      throw new ConfigError(ErrorCode.ScaffoldExists, `${(err as NodeJS.ErrnoException).path ?? "a file"} appeared while writing; nothing was left written`, { cause: err });
    }
    throw err;
  }
}

/** The longest command {@link nextSteps} prints with its note beside it. */
const NOTE_BESIDE_MAX = 120;

/** The next commands, exactly as to type them from `cwd` (the data directory's paths as `causeway up` uses them). */
export function nextSteps(plan: AgentPlan, cwd: string = process.cwd(), data: string = dataDir()): string {
  const { name, capability, major, subscribes, accepts, emits } = plan.template;
  const rel = (p: string) => relative(cwd, join(plan.root, p)) || ".";
  const bin = rel("bin/causeway");
  const doc = readPrincipalsDoc(plan);
  const subjects = subjectsFor(doc.prefix);
  const fact = subscribes[0];
  // Who could send it something now: a principal that emits the fact it subscribes to (nobody addresses a new capability yet).
  const producer = fact && Object.entries(doc.principals).find(([n, p]) => n !== name && p.role !== Role.Upstream && emitsCover((p.emits as string[] | undefined) ?? [], fact.type))?.[0];
  const nats = `nats --server nats://127.0.0.1:4222 --nkey ${shown(seedPath("operator", data))} --inbox-prefix ${inboxPrefix("operator")}`;
  // Notes aligned after their commands; a command too long for that (inline data) has its note on the line above.
  const block = (rows: readonly (readonly [string, string?])[]) => {
    const beside = (cmd: string, note: string | undefined): note is string => note !== undefined && cmd.length <= NOTE_BESIDE_MAX;
    const width = Math.max(0, ...rows.map(([cmd, note]) => (beside(cmd, note) ? cmd.length : 0)));
    return rows.flatMap(([cmd, note]) => (beside(cmd, note) ? [`    ${cmd.padEnd(width)}   # ${note}`] : [...(note === undefined ? [] : [`    # ${note}:`]), `    ${cmd}`]));
  };
  return [
    "Next:",
    ...block([[`${rel("node_modules/.bin/node")} --test ${rel(join("test", "agents", `${name}.test.ts`))}`, "its test, on a throwaway nats-server"]]),
    "",
    "  On a running mesh (`make up`), one command adds it: its seed, the server's accounts, a reload, the trust store, the process:",
    ...block([[`${bin} principal add ${name}`]]),
    "  which is, step by step:",
    ...block([
      [`${bin} keys new ${name}`],
      [`${bin} infra render --full`, `the config of make up's server, ${shown(join(runDir(data), "dev.conf"))}`],
      ["nats-server --signal reload=<pid>", `the nats-server pid \`${bin} ps\` shows`],
      [`${bin} trust seed`],
      [`${bin} start ${name}`],
    ]),
    "",
    "  Check it:",
    ...block([
      [`${nats} micro ls`, `lists ${name}`],
      fact
        ? [`${bin} event send --as ${producer ?? `<a principal that emits ${fact.type}>`} --type ${fact.type} --to ${subjects.event(fact.type, fact.major)}${dataArgs(plan, fact)}`, `the fact it subscribes to${dataNote(plan, fact)}`]
        : [`${bin} event send --as <a principal that addresses ${capability}.v${major}> --type ${accepts[0]!.type}${dataArgs(plan, accepts[0]!)}`, `nobody addresses ${capability}.v${major} yet: add it to a principal's addresses${dataNote(plan, accepts[0]!)}`],
      [`${bin} lineage trace <the flow id event send prints>`, `${emits.map((e) => e.type).join(", ")} from ${name}, verified`],
    ]),
  ].join("\n");
}

/**
 * `event send`'s data for an input of `ref`: the example the generated test sends (valid against its schema), inline
 * and quoted for a POSIX shell, so the printed command runs as printed; `--dataschema` too when `event send` would
 * otherwise pick a newer major. A file to fill in when no valid example could be built.
 */
function dataArgs(plan: AgentPlan, ref: TypeRef): string {
  const newest = newestSchemaOf(readSchemaDocuments(join(plan.root, "schemas")).map((d) => d.id), ref.type);
  const dataschema = newest === ref.dataschema ? "" : ` --dataschema ${ref.dataschema}`;
  const data = exampleFor(plan, ref);
  return `${dataschema} --data ${data === undefined ? `@${ref.type}.json` : `'${JSON.stringify(data).replaceAll("'", "'\\''")}'`}`;
}

/** What the note of {@link dataArgs}'s command adds: where the data comes from when it is a file to write. */
function dataNote(plan: AgentPlan, ref: TypeRef): string {
  return exampleFor(plan, ref) === undefined ? ` (write a valid ${ref.type} in ${ref.type}.json)` : ", with the example data of its test";
}

function exampleFor(plan: AgentPlan, ref: TypeRef): unknown {
  return plan.template.examples.find((x) => x.type === ref.type && x.dataschema === ref.dataschema)?.data;
}

function readPrincipalsDoc(plan: AgentPlan): RawPrincipals {
  return JSON.parse(readFileSync(join(plan.root, "infra", "principals.json"), "utf8")) as RawPrincipals;
}

/** The new principal's entry, in the key order of a reference agent, with the KV grants every agent has. */
function principalEntry(doc: RawPrincipals, e: { name: string; description: string; capRef: string; subscribes: readonly string[]; emits: readonly string[] }): RawPrincipal {
  const agents = Object.values(doc.principals).filter((p) => p.role === Role.Agent && p.entry !== undefined);
  const reference = agents[0];
  if (reference === undefined) throw new ConfigError(ErrorCode.Config, "infra/principals.json has no agent with an entry to model the new one on");
  // The grants every running agent has (the kill switches it watches, the processed set it marks), not one agent's extras.
  const common = (side: "read" | "write") => (reference.kv?.[side] ?? []).filter((b) => agents.every((a) => a.kv?.[side]?.includes(b)));
  const kv: Record<string, KvBucketValue[]> = {};
  for (const side of ["read", "write"] as const) if (common(side).length > 0) kv[side] = common(side);
  const values: Record<string, unknown> = {
    role: Role.Agent,
    description: e.description,
    service: e.name,
    entry: `services/agents/${e.name}/main.ts`,
    replicas: 1,
    serves: [e.capRef],
    subscribes: e.subscribes.length > 0 ? [...e.subscribes] : undefined,
    emits: [...e.emits],
    publish: e.emits.map((type) => `${doc.prefix}.evt.${type}.>`),
    kv: Object.keys(kv).length > 0 ? kv : undefined,
  };
  // The reference's key order, with `subscribes` after `serves`; keys it does not have go last.
  const order = Object.keys(reference).flatMap((k) => (k === "serves" ? [k, "subscribes"] : k === "subscribes" ? [] : [k]));
  for (const k of Object.keys(values)) if (!order.includes(k)) order.push(k);
  return Object.fromEntries(order.filter((k) => values[k] !== undefined).map((k) => [k, values[k]])) as RawPrincipal;
}

// principals.json as JSON (the schema guarantees the shape; parsePrincipals checks it).
interface RawPrincipal {
  role: string;
  entry?: string;
  kv?: { read?: KvBucketValue[]; write?: KvBucketValue[] };
  [key: string]: unknown;
}
interface RawPrincipals {
  prefix: string;
  capabilities: Record<string, { description: string; critical?: boolean }>;
  principals: Record<string, RawPrincipal>;
  [key: string]: unknown;
}
