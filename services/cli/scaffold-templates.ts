// The files `causeway new agent` writes, as text: an agent folder in the shape of services/agents/verifier
// (definition.ts, config.ts, main.ts), its test on a real nats-server (test/agents/<name>.test.ts, through
// test/agents/on-mesh.ts), and a schema stub for each emitted type that has no schema yet. Everything the files
// name — types, dataschemas, subjects — is decided by the caller (scaffold.ts); here it is only written down.

/** One event type the agent reads or writes, with the dataschema it was written against. */
export interface TypeRef {
  readonly type: string;
  /** Its dataschema ($id). */
  readonly dataschema: string;
  readonly major: number;
}

/** An emitted type: a stub (a schema this scaffold writes) or one that exists already. */
export interface EmitRef extends TypeRef {
  /** True when the scaffold writes its schema: the generated handler emits it, with the stub's data. */
  readonly stub: boolean;
  /** Its schema file, relative to the repository. */
  readonly file: string;
}

/** An input the generated test sends: a type the agent accepts or subscribes to, with example data. */
export interface InputExample extends TypeRef {
  /** The smallest valid instance the scaffold could build; undefined when it could not (the test says so). */
  readonly data: unknown;
}

/** What the templates are filled with. */
export interface AgentTemplate {
  /** The agent's (and its principal's, and its service's) name: a lowercase token. */
  readonly name: string;
  readonly capability: string;
  readonly major: number;
  readonly description: string;
  /** What its capability accepts. */
  readonly accepts: readonly TypeRef[];
  /** The facts it subscribes to. */
  readonly subscribes: readonly TypeRef[];
  readonly emits: readonly EmitRef[];
  /** One example input per accepted or subscribed type. */
  readonly examples: readonly InputExample[];
}

/** `fact-checker` → `FactChecker`. */
export function pascalCase(name: string): string {
  return name.split(/[-_]/).filter((p) => p !== "").map((p) => p[0]!.toUpperCase() + p.slice(1)).join("");
}

/** `report.summarized` → `ReportSummarized`. */
function typeName(type: string): string {
  return type.split(/[._-]/).filter((p) => p !== "").map((p) => p[0]!.toUpperCase() + p.slice(1)).join("");
}

/** `report.published` → `REPORT_PUBLISHED`: the generated test's constant for an example input. */
export function constName(type: string): string {
  return type.replace(/[.-]/g, "_").toUpperCase();
}

const q = (s: string) => JSON.stringify(s);

/** The stub schema of an emitted type that has no schema yet: the event it answers, by id and type. */
export function stubSchema(name: string, e: TypeRef): string {
  const schema = {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $id: e.dataschema,
    title: e.type,
    description: `Emitted by ${name}. A stub written by \`causeway new agent\`: the event it answers, by id and type. Describe the real data here before anything emits it (then take its line out of schemas.lock.json and lock it again); once events carry it, change it only as a new version.`,
    type: "object",
    additionalProperties: false,
    required: ["inputId", "inputType"],
    properties: {
      inputId: { description: "The id of the event this one answers.", type: "string", minLength: 1, maxLength: 256 },
      inputType: { description: "The type of the event this one answers.", type: "string", minLength: 1, maxLength: 256 },
    },
  };
  return `${JSON.stringify(schema, null, 2)}\n`;
}

/** services/agents/<name>/config.ts. */
export function configTs(t: AgentTemplate): string {
  const P = pascalCase(t.name);
  const c = P[0]!.toLowerCase() + P.slice(1);
  const env = `CAUSEWAY_${t.name.replace(/-/g, "_").toUpperCase()}_CONCURRENCY`;
  return `// The ${t.name}'s configuration: environment → typed → validated → frozen. A bad value fails at startup with a
// message naming the variable and the form it expects.
import { envInteger } from "../../kit/index.ts";

/** The environment variables the ${t.name} reads. */
export const ${P}Env = {
  /** Inputs handled at once in one process. */
  Concurrency: ${q(env)},
} as const;

/** The ${t.name}'s settings. */
export interface ${P}Config {
  /** Inputs handled at once in one process. Default 8. */
  readonly concurrency: number;
}

/** Defaults, one literal object. */
export const ${c}Defaults: ${P}Config = Object.freeze({ concurrency: 8 });

/** Reads, validates and freezes the ${t.name}'s configuration. Throws ConfigError CW_ERR_CONFIG. */
export function load${P}Config(env: NodeJS.ProcessEnv = process.env): ${P}Config {
  return Object.freeze({
    concurrency: envInteger(env, ${P}Env.Concurrency, 1, 1024, ${c}Defaults.concurrency),
  });
}
`;
}

/** services/agents/<name>/definition.ts. */
export function definitionTs(t: AgentTemplate): string {
  const P = pascalCase(t.name);
  const c = P[0]!.toLowerCase() + P.slice(1);
  const schemaConst = `${P}Schema`;
  const all = new Map<string, string>();
  for (const r of [...t.accepts, ...t.subscribes, ...t.emits]) all.set(r.type, r.dataschema);
  const ref = (type: string) => `${schemaConst}[${q(type)}]`;
  const record = (refs: readonly TypeRef[]) => `{ ${refs.map((r) => `${q(r.type)}: ${ref(r.type)}`).join(", ")} }`;
  const stubs = t.emits.filter((e) => e.stub);
  const others = t.emits.filter((e) => !e.stub);
  const header = [
    `// The ${t.name}: serves ${t.capability}.v${t.major}${t.subscribes.length > 0 ? `; subscribes to ${t.subscribes.map((s) => `${s.type} v${s.major}`).join(", ")}` : ""}.`,
    "// Written by `causeway new agent`: put the agent's work in the handler. The runtime (services/kit/agent.ts) verifies,",
    "// dedupes and validates every input before the handler runs, and signs, validates and publishes what it returns",
    "// (docs/agents.md).",
  ];
  const interfaces = stubs.map((e) => `
/** The data of ${e.type} (${e.file}, a stub: describe the real data there). */
export interface ${typeName(e.type)} {
  inputId: string;
  inputType: string;
}
`).join("");
  const body: string[] = [];
  if (stubs.length > 0) {
    body.push(`      // TODO: the agent's work. As generated it answers every input — work for ${t.capability}.v${t.major}${t.subscribes.length > 0 ? " and the facts it subscribes to" : ""} —`);
    body.push(`      // with ${stubs.length === 1 ? "one fact" : "one fact of each emitted type"} naming the input; input.event.type says which input it is.`);
    for (const e of others) body.push(`      // ${e.type} (${e.file}): build its data, then emit it to ctx.subjects.event(${q(e.type)}, ${e.major}).`);
    const answer = `{ inputId: input.event.id, inputType: input.event.type }`;
    body.push("      return [");
    for (const e of stubs) {
      body.push(`        { to: ctx.subjects.event(${q(e.type)}, ${e.major}), type: ${q(e.type)}, data: ${answer} satisfies ${typeName(e.type)} },`);
    }
    body.push("      ];");
  } else {
    body.push(`      // TODO: the agent's work: read input.data (validated against input.event.dataschema), then return what to emit:`);
    for (const e of others) body.push(`      // ${e.type} (${e.file}) to ctx.subjects.event(${q(e.type)}, ${e.major}).`);
    body.push("      return [];");
  }
  const used = stubs.length > 0 ? ["input", "ctx"] : ["_input", "_ctx"];
  return `${header.join("\n")}
import { ${c}Defaults, type ${P}Config } from "./config.ts";
import type { AgentDefinition, Emit, HandlerContext, HandlerInput } from "../../kit/index.ts";

/** Event types and the dataschemas the ${t.name} was written against. */
export const ${schemaConst} = {
${[...all].map(([type, id]) => `  ${q(type)}: ${q(id)},`).join("\n")}
} as const;
${interfaces}
/** What the ${t.name} is built from. */
export interface ${P}Deps {
  config?: ${P}Config;
}

/** The ${t.name}'s agent definition. */
export function create${P}Definition(deps: ${P}Deps = {}): AgentDefinition {
  const config = deps.config ?? ${c}Defaults;
  return {
    principal: ${q(t.name)},
    capability: ${q(t.capability)},
    major: ${t.major},
    version: "0.1.0",
    description: ${q(t.description)},
    accepts: ${record(t.accepts)},
${t.subscribes.length > 0 ? `    subscribes: ${record(t.subscribes)},\n` : ""}    emits: ${record(t.emits)},
    concurrency: config.concurrency,
    handler(${used[0]}: HandlerInput, ${used[1]}: HandlerContext): readonly Emit[] {
${body.join("\n")}
    },
  };
}
`;
}

/** services/agents/<name>/main.ts. */
export function mainTs(t: AgentTemplate): string {
  const P = pascalCase(t.name);
  return `// The ${t.name}'s process entry: connect as \`${t.name}\`, serve ${t.capability}.v${t.major}${t.subscribes.length > 0 ? " and its subscriptions" : ""}, drain on SIGTERM / SIGINT.
// Imported rather than run (\`causeway replay\`), it only exports its definition factory.
import { load${P}Config } from "./config.ts";
import { create${P}Definition } from "./definition.ts";
import { runAgentProcess, type DefinitionFactory } from "../../kit/index.ts";

export const definition = (() => create${P}Definition({ config: load${P}Config() })) satisfies DefinitionFactory;

if (import.meta.main) await runAgentProcess(${q(t.name)}, definition);
`;
}

/** test/agents/<name>.test.ts: each input the agent takes, through a real server, and the outputs it must cause. */
export function testTs(t: AgentTemplate): string {
  const P = pascalCase(t.name);
  const stubs = t.emits.filter((e) => e.stub).sort((a, b) => a.type.localeCompare(b.type));
  const consts = t.examples.map((x) => {
    const data = x.data === undefined
      ? `{} // TODO: the scaffold could not build a valid ${x.type} (${x.dataschema}): fill it in`
      : JSON.stringify(x.data);
    return `/** A ${x.type} (${x.dataschema}): the smallest the schema allows. Make it realistic. */\nconst ${constName(x.type)} = ${data};`;
  });
  const expectation = (input: string) => {
    if (stubs.length === 0) return `  assert.deepEqual(await mesh.outputsOf(${input}, 0), [], "as generated, the handler emits nothing");`;
    return [
      `  const outputs = await mesh.outputsOf(${input}, ${stubs.length});`,
      "  assert.deepEqual(outputs.map((o) => [o.event.type, o.subject, o.signer]), [",
      ...stubs.map((e) => `    [${q(e.type)}, mesh.subjects.event(${q(e.type)}, ${e.major}), ${q(t.name)}],`),
      "  ]);",
      `  for (const o of outputs) assert.deepEqual(o.data, { inputId: ${input}.id, inputType: ${input}.type });`,
    ].join("\n");
  };
  const yields = stubs.length === 0 ? "is handled" : `yields ${stubs.map((e) => e.type).join(" and ")}, signed by ${t.name}`;
  const tests = [
    ...t.subscribes.map((s) => `test(${q(`${t.name} - a ${s.type} fact ${yields}`)}, async () => {
  await using mesh = await startAgentOnMesh(create${P}Definition());
  const input = await mesh.publishFact(${q(s.type)}, ${s.major}, ${constName(s.type)});
${expectation("input")}
});`),
    ...t.accepts.map((a) => `test(${q(`${t.name} - ${a.type} sent to ${t.capability}.v${t.major} ${yields}`)}, async () => {
  await using mesh = await startAgentOnMesh(create${P}Definition());
  const input = await mesh.sendWork(${q(a.type)}, ${constName(a.type)});
${expectation("input")}
});`),
  ];
  return `// The ${t.name} on a real nats-server (test/harness), as the mesh runs it: streams and buckets applied, the trust
// store seeded from infra/principals.json, the agent started with its own key (test/agents/on-mesh.ts). Written by
// \`causeway new agent\`; it passes as generated: change it with the handler.
import assert from "node:assert/strict";
import { test } from "node:test";
import { create${P}Definition } from "../../services/agents/${t.name}/definition.ts";
import { startAgentOnMesh } from "./on-mesh.ts";

${consts.join("\n\n")}

${tests.join("\n\n")}
`;
}
