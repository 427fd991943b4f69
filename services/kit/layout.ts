// The mesh layout: every name the mesh is made of — the subject prefix, the streams, the durable consumers, the
// KV buckets, the services that run as processes — read once from the files that declare them
// (infra/principals.json for the prefix, who consumes what and which principals run an entry point,
// streams/*.json and streams/consumers/*.json for the streams and durables, the bucket table of buckets.ts) and
// frozen. Services, the CLI and the tests take names from here instead of defining them where
// they use them; the stream files stay written under the default prefix, so `nats stream add --config` takes
// them as they are, and the layout renders their subject fields for the mesh's prefix.
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { MESH_BUCKETS, type BucketSpec, type KvBucketValue } from "./buckets.ts";
import { Priority, type PriorityValue } from "./context.ts";
import { ConfigError, ErrorCode } from "./errors.ts";
import { DEFAULT_PRINCIPALS_PATH, capabilityDurable, isDerivedConsumer, laneDurable, loadPrincipals, parseFactRef, subscriptionDurable, type Principals, type RoleValue } from "./principals.ts";
import {
  SUBSCRIPTION_TEMPLATE, defaultStreamsDir, loadConsumerTemplate, loadStreamDefinitionsSync, renderCapabilityConsumer, renderStreamDefinitions,
  renderSubscriptionConsumer,
  type ConsumerDefinition, type ConsumerFileConfig, type StreamDefinition, type StreamFileConfig,
} from "./stream-files.ts";
import { subjectsFor, type Lane, type MeshSubjects } from "./subjects.ts";

/** The repository root, which services' entry points are relative to. */
const repoRoot = resolve(import.meta.dirname, "..", "..");

/**
 * A service of the mesh: a principal of infra/principals.json with an `entry`, run as one or more processes; or
 * one of the principal's further `versions`, run beside it as `<principal>@<version>`.
 */
export interface MeshService {
  /**
   * Its name for `causeway start|stop|restart|logs|ps`, its pid files and its log: the principal's name, or
   * `<principal>@<version>` for a version of its `versions`.
   */
  readonly name: string;
  /** The principal it runs as (its key, its permissions). */
  readonly principal: string;
  /** The version of the principal's `versions` it runs; undefined for the principal's own entry. */
  readonly version?: string;
  readonly role: RoleValue;
  /** The NATS micro service it registers: the process is ready once this answers a ping. */
  readonly service: string;
  /** The entry point as principals.json writes it, relative to the repository root. */
  readonly entry: string;
  /** The entry point's absolute path. */
  readonly entryPath: string;
  /** How many processes run unless told otherwise. */
  readonly replicas: number;
}

/** Where {@link loadLayout} reads the layout from. */
export interface LayoutOptions {
  /** The principals file, which holds the mesh's prefix. Default: infra/principals.json. */
  principalsPath?: string;
  /** Principals already loaded (instead of `principalsPath`). */
  principals?: Principals;
  /** The stream and consumer definitions. Default: the repository's streams/ directory. */
  streamsDir?: string;
  /** Another subject prefix than the principals file's (a second mesh on one server). Default: the file's. */
  prefix?: string;
}

/** Every name of the mesh, each rendered for its prefix. Deep-frozen; build it once with {@link loadLayout}. */
export interface MeshLayout {
  /** The subject prefix, e.g. `mesh`. */
  readonly prefix: string;
  /** Subject builders and parser for the prefix. */
  readonly subjects: MeshSubjects;
  /** The principals file the prefix came from (subjects written under `principals.prefix`). */
  readonly principals: Principals;
  /** Every stream with its consumer files, subjects rendered for the prefix, by stream name in file order: what `causeway streams apply` applies. */
  readonly streams: Readonly<Record<string, StreamDefinition>>;
  /** Every durable consumer that has a file, rendered for the prefix. */
  readonly consumers: readonly ConsumerDefinition[];
  /** Every KV bucket of the mesh and how it is created. */
  readonly buckets: Readonly<Record<KvBucketValue, BucketSpec>>;
  /** The services that run as processes, in the order principals.json declares them: what `causeway up` starts. */
  readonly services: readonly MeshService[];
  /**
   * The further versions of those services (principals.json `versions`), `<principal>@<version>`: run only when
   * named (`causeway start researcher@1.1.0`), never by `causeway up` or a `start` of everything.
   */
  readonly versions: readonly MeshService[];
  /** Where it was read from. */
  readonly sources: { readonly principals: string; readonly streams: string };
  /**
   * The service called `name`, `<principal>` or `<principal>@<version>`; CW_ERR_UNKNOWN_PRINCIPAL (listing the
   * services) when no principal of that name runs as a process, CW_ERR_UNKNOWN_VERSION (listing its versions)
   * when the principal declares no such version.
   */
  service(name: string): MeshService;
  /** The stream's config; CW_ERR_CONFIG when no file defines it. */
  stream(name: string): Readonly<StreamFileConfig>;
  /** The config of durable `name` on `stream`, from `streams/consumers/<stream>.<name>.json`; CW_ERR_CONFIG when there is no such file. */
  durable(stream: string, name: string): Readonly<ConsumerFileConfig>;
  /**
   * The shared consumer of a capability on MESH_CAP, from `capability.template.json`; for another priority than
   * normal (issue 16) the same on the priority's subject, under the priority's durable name.
   * CW_ERR_STREAM_CONFIG_INVALID for a bad token.
   */
  capabilityConsumer(capability: string, major: number, priority?: PriorityValue): Readonly<ConsumerFileConfig>;
  /** The consumer of one lane of a routed capability (routing.ts): the capability's, on the lane's subject (and priority's, as above). */
  laneConsumer(capability: string, major: number, lane: Lane, priority?: PriorityValue): Readonly<ConsumerFileConfig>;
  /**
   * The consumers of `principal`'s subscriptions (principals.json `subscribes`), one per fact on MESH_EVT, from
   * `subscription.template.json`, in declaration order with the fact each serves. Empty when it subscribes to nothing.
   */
  subscriptionConsumers(principal: string): readonly { readonly type: string; readonly major: number; readonly config: Readonly<ConsumerFileConfig> }[];
  /**
   * The streams `principal` consumes through a durable of its own (principals.json `consumes`, each checked
   * against its file), with the durable's name: how a service finds its consumers. Capability and subscription
   * consumers are {@link capabilityConsumer}'s and {@link subscriptionConsumers}'.
   */
  consumersOf(principal: string): readonly { readonly stream: string; readonly durable: string }[];
  /** The one durable `principal` consumes on `stream`; CW_ERR_CONFIG when it has none there. */
  durableOf(principal: string, stream: string): string;
}

/**
 * Reads the principals file and the stream and consumer files, renders them for the prefix and checks that
 * they agree: every durable a principal consumes has its file (with the same filter), every consumer file has
 * a principal that consumes it, and the capability template names the durables principals.json derives.
 * ConfigError (CW_ERR_CONFIG, CW_ERR_STREAM_CONFIG_INVALID or CW_ERR_PRINCIPALS_INVALID) naming the file at fault.
 */
export function loadLayout(opts: LayoutOptions = {}): MeshLayout {
  const principals = opts.principals ?? loadPrincipals(opts.principalsPath ?? DEFAULT_PRINCIPALS_PATH);
  const prefix = opts.prefix ?? principals.prefix;
  const subjects = subjectsFor(prefix);
  const streamsDir = opts.streamsDir ?? defaultStreamsDir;
  const defs = renderStreamDefinitions(loadStreamDefinitionsSync(streamsDir), prefix);
  const template = loadConsumerTemplate(streamsDir);
  const subscriptionTemplate = loadConsumerTemplate(streamsDir, SUBSCRIPTION_TEMPLATE);

  const streams: Record<string, StreamDefinition> = {};
  for (const d of defs) streams[d.config.name] = d;
  const consumers = Object.freeze(defs.flatMap((d) => d.consumers));
  const byKey = new Map(consumers.map((c) => [`${c.stream}.${c.config.durable_name}`, c]));

  const capabilityConsumer = (capability: string, major: number, priority: PriorityValue = Priority.Normal) => {
    const plain = renderCapabilityConsumer(template, capability, major, prefix);
    return priority === Priority.Normal ? plain : Object.freeze({
      ...plain,
      durable_name: capabilityDurable(capability, major, priority),
      description: `${plain.description ?? `Agents serving ${capability} v${major}`}: ${priority} work`,
      filter_subject: subjectsFor(prefix).capability(capability, major, priority),
    });
  };
  const laneConsumer = (capability: string, major: number, lane: Lane, priority: PriorityValue = Priority.Normal) => Object.freeze({
    ...capabilityConsumer(capability, major),
    durable_name: laneDurable(capability, major, lane, priority),
    description: `Agents of one version of ${capability} v${major}, routed to lane ${lane} by the control plane${priority === Priority.Normal ? "" : `: ${priority} work`}`,
    filter_subject: subjectsFor(prefix).lane(capability, major, lane, priority),
  });

  const principalOf = (principal: string) => {
    const p = Object.hasOwn(principals.principals, principal) ? principals.principals[principal] : undefined;
    if (!p) throw new ConfigError(ErrorCode.UnknownPrincipal, `no principal "${principal}" in ${principals.source}`);
    return p;
  };
  const consumersOf = (principal: string) =>
    Object.freeze(principalOf(principal).consumes.filter((c) => !isDerivedConsumer(c)).map((c) => Object.freeze({ stream: c.stream, durable: c.durable })));
  const subscriptionConsumers = (principal: string) => Object.freeze(principalOf(principal).subscribes.map((ref) => {
    const { type, major } = parseFactRef(ref)!; // checked by the principals schema
    return Object.freeze({ type, major, config: renderSubscriptionConsumer(subscriptionTemplate, principal, type, major, prefix) });
  }));

  const services = Object.freeze(Object.values(principals.principals).flatMap((p) => (p.entry === undefined || p.service === undefined ? [] : [Object.freeze({
    name: p.name, principal: p.name, role: p.role, service: p.service, entry: p.entry, entryPath: join(repoRoot, p.entry), replicas: p.replicas,
  })])));
  // Each version beside a service is a service of its own name: pid files, logs and `ps` rows per version.
  const versions = Object.freeze(services.flatMap((s) => Object.entries(principals.principals[s.principal]!.versions).map(([version, v]) => Object.freeze({
    ...s, name: versionedName(s.principal, version), version, entry: v.entry, entryPath: join(repoRoot, v.entry), replicas: v.replicas,
  }))));

  const problems = [
    ...checkAgreement(principals, prefix, byKey, capabilityConsumer, subscriptionConsumers),
    ...[...services, ...versions].filter((s) => !existsSync(s.entryPath)).map((s) => `${s.name}'s entry ${s.entry} does not exist (${s.entryPath})`),
  ];
  if (problems.length > 0) {
    throw new ConfigError(ErrorCode.Config, `the mesh layout (${principals.source}, ${streamsDir}) is inconsistent:\n  ${problems.join("\n  ")}`);
  }

  const service = (name: string): MeshService => {
    const at = name.indexOf("@");
    if (at !== -1) {
      const base = service(name.slice(0, at));
      const version = name.slice(at + 1);
      const found = versions.find((s) => s.principal === base.principal && s.version === version);
      if (found) return found;
      const declared = versions.filter((s) => s.principal === base.principal).map((s) => s.version);
      throw new ConfigError(ErrorCode.UnknownVersion, `${base.principal} declares no version "${version}" in ${principals.source} (its "versions": ${declared.join(", ") || "none"}; \`causeway start ${base.principal}\` runs its own entry, ${base.entry})`);
    }
    const found = services.find((s) => s.name === name);
    if (!found) {
      const what = Object.hasOwn(principals.principals, name) ? `principal "${name}" runs no process (it has no entry)` : `no principal "${name}"`;
      throw new ConfigError(ErrorCode.UnknownPrincipal, `${what} in ${principals.source}; its services: ${services.map((s) => s.name).join(", ") || "none"}`);
    }
    return found;
  };

  return Object.freeze({
    prefix,
    subjects,
    principals,
    streams: Object.freeze(streams),
    consumers,
    buckets: MESH_BUCKETS,
    services,
    versions,
    sources: Object.freeze({ principals: principals.source, streams: streamsDir }),
    service,
    stream(name: string) {
      const def = Object.hasOwn(streams, name) ? streams[name] : undefined;
      if (!def) throw new ConfigError(ErrorCode.Config, `no stream ${name} in ${streamsDir} (streams: ${Object.keys(streams).join(", ")})`);
      return def.config;
    },
    durable(stream: string, name: string) {
      const c = byKey.get(`${stream}.${name}`);
      if (!c) throw new ConfigError(ErrorCode.Config, `no durable consumer ${stream}/${name}: every durable has its file, ${streamsDir}/consumers/${stream}.${name}.json`);
      return c.config;
    },
    capabilityConsumer,
    laneConsumer,
    subscriptionConsumers,
    consumersOf,
    durableOf(principal: string, stream: string) {
      const found = consumersOf(principal).find((c) => c.stream === stream);
      if (!found) throw new ConfigError(ErrorCode.Config, `${principal} consumes nothing on ${stream} in ${principals.source}`);
      return found.durable;
    },
  });
}

/** The service name of `version` of `principal`: `researcher@1.1.0`. */
export function versionedName(principal: string, version: string): string {
  return `${principal}@${version}`;
}

let memo: MeshLayout | undefined;

/** The layout of the repository's own files ({@link loadLayout} without options), loaded on first use. */
export function defaultLayout(): MeshLayout {
  memo ??= loadLayout();
  return memo;
}

function checkAgreement(
  principals: Principals,
  prefix: string,
  byKey: ReadonlyMap<string, ConsumerDefinition>,
  capabilityConsumer: (capability: string, major: number) => Readonly<ConsumerFileConfig>,
  subscriptionConsumers: MeshLayout["subscriptionConsumers"],
): string[] {
  const problems: string[] = [];
  // principals.json is written under its own prefix; compare both sides under the layout's.
  const rebase = (s: string) => (s === principals.prefix || s.startsWith(`${principals.prefix}.`) ? `${prefix}${s.slice(principals.prefix.length)}` : s);
  const consumed = new Set<string>();
  for (const p of Object.values(principals.principals)) {
    for (const c of p.consumes) {
      if (isDerivedConsumer(c)) continue; // derived from `serves` and `subscribes`, checked below
      const key = `${c.stream}.${c.durable}`;
      consumed.add(key);
      const file = byKey.get(key);
      if (!file) {
        problems.push(`${p.name} consumes ${c.stream}/${c.durable}, which has no file streams/consumers/${key}.json`);
        continue;
      }
      const filter = file.config.filter_subject;
      const declared = c.filter === undefined ? undefined : rebase(c.filter);
      if (declared !== filter) {
        problems.push(`${p.name} consumes ${c.stream}/${c.durable} with filter ${declared ?? "(none)"}, but ${file.file} declares ${filter ?? "(none)"}`);
      }
    }
  }
  for (const key of byKey.keys()) {
    if (!consumed.has(key)) problems.push(`${byKey.get(key)!.file} is consumed by no principal of ${principals.source}`);
  }
  for (const cap of Object.values(principals.capabilities)) {
    const config = capabilityConsumer(cap.name, cap.major);
    const durable = capabilityDurable(cap.name, cap.major);
    const filter = subjectsFor(prefix).capability(cap.name, cap.major);
    if (config.durable_name !== durable || config.filter_subject !== filter) {
      problems.push(`capability.template.json gives ${cap.ref} durable ${config.durable_name} filtering ${config.filter_subject ?? "(none)"}; principals expect ${durable} filtering ${filter}`);
    }
  }
  for (const p of Object.values(principals.principals)) {
    for (const { type, major, config } of subscriptionConsumers(p.name)) {
      const durable = subscriptionDurable(p.name, { type, major });
      const filter = subjectsFor(prefix).event(type, major);
      if (config.durable_name !== durable || config.filter_subject !== filter) {
        problems.push(`${SUBSCRIPTION_TEMPLATE} gives ${p.name}'s subscription to ${type}.v${major} durable ${config.durable_name} filtering ${config.filter_subject ?? "(none)"}; principals expect ${durable} filtering ${filter}`);
      }
    }
  }
  return problems;
}

