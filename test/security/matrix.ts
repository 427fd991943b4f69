// The permission matrix: what each principal of infra/principals.json may do on the server, action by action.
// The probes (the columns) are built from principals.json and the kit's constants; the expectation (which
// cells are allowed) is declared here, by hand, on purpose: it is the reviewed statement of the security model
// that the rendered permissions are tested against (test/security/permission-matrix.test.ts) and that
// docs/security.md prints (renderMatrix). Anything not listed for a principal must be refused.
import { GATEWAY_MARK_PREFIX, KvBucket, MESH_BUCKETS, Role, capabilityKeyPrefix, type KvBucketValue, type Principals } from "../../services/kit/index.ts";

/** How a probe acts. */
export type ProbeKind =
  | { readonly kind: "publish"; readonly subject: string }
  | { readonly kind: "subscribe"; readonly subject: string }
  /** Requests every service it can reach with a KV key as the reply subject; "allowed" means a reply landed there. */
  | { readonly kind: "foreign-reply"; readonly bucket: KvBucketValue; readonly key: string }
  | { readonly kind: "kv"; readonly op: "put" | "create" | "delete"; readonly bucket: KvBucketValue; readonly keyPrefix: string }
  | { readonly kind: "stream-create" }
  | { readonly kind: "stream-delete" }
  | { readonly kind: "consumer-create"; readonly stream: string; readonly filter: string };

/** One column of the matrix. */
export type Probe = ProbeKind & { readonly id: string; readonly label: string };


/** The probes, derived from principals.json (its prefix, capabilities, upstreams) and the bucket table. */
export function probesFor(principals: Principals): Probe[] {
  const m = principals.prefix;
  const caps = Object.values(principals.capabilities);
  const critical = caps.find((c) => c.critical);
  const plain = caps.find((c) => !c.critical);
  const upstream = Object.values(principals.principals).find((p) => p.role === Role.Upstream);
  const coordinator = Object.values(principals.principals).find((p) => p.role === Role.Coordinator);
  if (!critical || !plain || !upstream || !coordinator?.service) throw new Error("the matrix needs a critical and a plain capability, an upstream and a coordinator service");
  const criticalKeys = capabilityKeyPrefix(critical.name, critical.major);

  const pub = (family: string, subject: string): Probe => ({ id: `publish ${family}`, label: `publish \`${subject}\``, kind: "publish", subject });
  const probes: Probe[] = [
    pub("ingest", `${m}.ingest.${upstream.name}.probe`),
    pub("cap", `${m}.cap.${plain.name}.v${plain.major}`),
    pub("cap (critical)", `${m}.cap.${critical.name}.v${critical.major}`),
    pub("handoff", `${m}.handoff.${critical.name}.v${critical.major}`),
    pub("evt", `${m}.evt.report.probe`),
    pub("decision", `${m}.decision.grant`),
    // Approvers sign decision.approval events but send them to the coordinator (`causeway approve`), which publishes them.
    pub("decision (approval)", `${m}.decision.approval`),
    pub("quarantine", `${m}.quarantine.probe.${plain.name}`),
    pub("audit", `${m}.audit.checkpoint`),
    pub("ctl", `${m}.ctl.${coordinator.service}.status`),
    { id: "subscribe foreign inbox", label: "subscribe `_INBOX_<another principal>.>`", kind: "subscribe", subject: "_INBOX_<other>.>" },
    { id: "subscribe stream subject", label: `subscribe \`${m}.decision.>\``, kind: "subscribe", subject: `${m}.decision.>` },
    // Blind responders answer: what lands is what the server lets the service publish, whatever its code checks.
    { id: "request, reply onto a trust key", label: `request every service it reaches, reply subject \`$KV.${KvBucket.Trust}.probe\``, kind: "foreign-reply", bucket: KvBucket.Trust, key: "probe" },
    { id: "request, reply onto the mesh kill switch", label: `request every service it reaches, reply subject \`$KV.${KvBucket.Switches}.mesh\` ¹`, kind: "foreign-reply", bucket: KvBucket.Switches, key: "mesh" },
  ];
  // Buckets shared by several writers are probed in each writer's key space.
  const keySpaces: Record<KvBucketValue, readonly string[]> = {
    [KvBucket.Trust]: ["probe"],
    [KvBucket.Leases]: [criticalKeys],
    [KvBucket.Approvals]: ["probe"],
    [KvBucket.Switches]: ["probe"],
    [KvBucket.Processed]: [criticalKeys, GATEWAY_MARK_PREFIX],
    [KvBucket.Joins]: ["probe"],
    [KvBucket.Instances]: [criticalKeys],
    [KvBucket.Routes]: ["probe"],
    [KvBucket.FlowLedger]: [criticalKeys],
    [KvBucket.Quotas]: ["probe"],
    [KvBucket.Pressure]: ["probe"],
  };
  for (const bucket of Object.keys(MESH_BUCKETS) as KvBucketValue[]) {
    for (const keyPrefix of keySpaces[bucket]) {
      for (const op of ["put", "create", "delete"] as const) {
        const where = keyPrefix === "probe" ? bucket : `${bucket} ${keyPrefix}.…`;
        probes.push({ id: `kv ${op} ${where}`, label: `KV ${op} in \`${where}\``, kind: "kv", op, bucket, keyPrefix });
      }
    }
  }
  probes.push(
    { id: "stream create", label: "JetStream API: create a stream", kind: "stream-create" },
    { id: "stream delete", label: "JetStream API: delete a stream", kind: "stream-delete" },
    { id: "consumer create (foreign)", label: `JetStream API: create a durable on MESH_CAP filtered on \`${m}.cap.${plain.name}.v${plain.major}\``, kind: "consumer-create", stream: "MESH_CAP", filter: `${m}.cap.${plain.name}.v${plain.major}` },
  );
  return probes;
}

/**
 * The declared matrix: per principal, the probes it must pass. Every other probe must be refused. A principal here
 * that principals.json does not have fails the test, and so does one of principals.json missing here, unless it is
 * an agent: an agent the matrix does not name (one `causeway new agent` added) is held to {@link OTHER_AGENT}.
 */
export const ALLOWED: Readonly<Record<string, readonly string[]>> = {
  gateway: [
    "publish cap", "kv put causeway_processed gateway.…", "kv create causeway_processed gateway.…", "kv delete causeway_processed gateway.…",
    "kv put causeway_quotas", "kv create causeway_quotas", "kv delete causeway_quotas",
  ],
  coordinator: [
    "publish ingest", "publish cap", "publish cap (critical)", "publish handoff", "publish evt", "publish decision", "publish decision (approval)", "publish quarantine",
    "kv put causeway_leases publish_v1.…", "kv create causeway_leases publish_v1.…", "kv delete causeway_leases publish_v1.…",
    "kv put causeway_approvals", "kv create causeway_approvals", "kv delete causeway_approvals",
    "kv put causeway_switches", "kv create causeway_switches", "kv delete causeway_switches",
    "kv put causeway_routes", "kv create causeway_routes", "kv delete causeway_routes",
    "kv put causeway_pressure", "kv create causeway_pressure", "kv delete causeway_pressure",
  ],
  lineage: ["publish audit"],
  planner: ["publish quarantine"],
  researcher: [],
  verifier: [],
  reporter: ["publish handoff", "publish evt", "kv put causeway_joins", "kv create causeway_joins", "kv delete causeway_joins"],
  publisher: [
    "publish evt",
    "kv put causeway_instances publish_v1.…", "kv create causeway_instances publish_v1.…", "kv delete causeway_instances publish_v1.…",
    "kv put causeway_leases publish_v1.…", "kv create causeway_leases publish_v1.…", "kv delete causeway_leases publish_v1.…",
    "kv put causeway_processed publish_v1.…", "kv create causeway_processed publish_v1.…", "kv delete causeway_processed publish_v1.…",
    "kv put causeway_flow_ledger publish_v1.…", "kv create causeway_flow_ledger publish_v1.…", "kv delete causeway_flow_ledger publish_v1.…",
  ],
  // ¹ The coordinator may write the switches itself, so the server cannot refuse its answer there: only the code
  // check (control.ts, CW_ERR_REPLY_REFUSED) stops a request from the coordinator's requesters landing there.
  "approver-alice": ["request, reply onto the mesh kill switch"],
  "approver-bob": ["request, reply onto the mesh kill switch"],
  operator: ["publish ctl", "request, reply onto the mesh kill switch", "kv put causeway_trust", "kv create causeway_trust", "kv delete causeway_trust", "stream create", "stream delete", "consumer create (foreign)"],
  auditor: [],
  sysadmin: [],
  "upstream-demo": ["publish ingest"],
  // The probes' upstream is upstream-demo: another upstream may not publish on its ingest subjects.
  "upstream-batch": [],
};

/**
 * The row of an agent the matrix does not name: none of the probed actions. What an agent may do beyond its own
 * capability, facts and processed marks (publish work for others, quarantine, write shared buckets) is a reviewed
 * grant, declared in {@link ALLOWED} by name.
 */
export const OTHER_AGENT: readonly string[] = [];

/** The column of {@link OTHER_AGENT} in the rendered matrix. */
const OTHER_AGENT_COLUMN = "any other agent ²";

/** Allowed or refused, as declared. */
export function expected(principal: string, probe: Pick<Probe, "id">): "allowed" | "refused" {
  return (ALLOWED[principal] ?? OTHER_AGENT).includes(probe.id) ? "allowed" : "refused";
}

/**
 * The matrix as a Markdown table (one row per probe, one column per declared principal, in principals.json order,
 * then one for any other agent), as docs/security.md prints it: adding an agent does not change it.
 */
export function renderMatrix(principals: Principals): string {
  const names = Object.keys(principals.principals).filter((n) => Object.hasOwn(ALLOWED, n));
  const lines = [
    `| action | ${names.map((n) => `\`${n}\``).join(" | ")} | ${OTHER_AGENT_COLUMN} |`,
    `|---|${[...names, OTHER_AGENT_COLUMN].map(() => ":-:").join("|")}|`,
  ];
  const cell = (allowed: boolean) => (allowed ? "✅" : "—");
  for (const probe of probesFor(principals)) {
    lines.push(`| ${probe.label} | ${names.map((n) => cell(expected(n, probe) === "allowed")).join(" | ")} | ${cell(OTHER_AGENT.includes(probe.id))} |`);
  }
  return lines.join("\n") + "\n";
}
