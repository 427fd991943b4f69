// The routing table (infra/routes.json): each upstream event type goes to one capability, with one accepted
// dataschema. Checked at load against principals.json: the gateway must emit the type and address the
// capability, or every event it routed would be refused downstream.
import { ErrorCode, invalidFile, readInfraFile, subjectsFor, type Principals, type SchemaRegistry } from "../kit/index.ts";

/** Where one type goes. */
export interface Route {
  readonly type: string;
  /** `<capability>.v<major>`. */
  readonly ref: string;
  readonly capability: string;
  readonly major: number;
  /** The accepted dataschema (`$id` in schemas/). */
  readonly dataschema: string;
  /** `mesh.cap.<capability>.v<major>`, or `mesh.handoff.…` for a critical capability. */
  readonly subject: string;
}

/** Routes by type. */
export type Routes = ReadonlyMap<string, Route>;

/** True when `pattern` (an `emits` entry: exact, `<prefix>.*` or `*`) covers `type`. */
function emitsCovers(pattern: string, type: string): boolean {
  if (pattern === "*" || pattern === type) return true;
  return pattern.endsWith(".*") && type.startsWith(pattern.slice(0, -1));
}

/** Loads infra/routes.json; ConfigError CW_ERR_ROUTES_INVALID names the JSON path at fault. */
export function loadRoutes(path: string, principals: Principals, gateway: string, schemas: SchemaRegistry): Routes {
  const doc = readInfraFile<{ routes: Record<string, { capability: string; dataschema: string }> }>(path, "routes.schema.json", ErrorCode.RoutesInvalid);
  const spec = principals.principals[gateway];
  const subjects = subjectsFor(principals.prefix);
  const problems: string[] = [];
  const routes = new Map<string, Route>();
  for (const [type, r] of Object.entries(doc.routes)) {
    const at = `/routes/${type}`;
    const cap = principals.capabilities[r.capability];
    if (!cap) {
      problems.push(`${at}/capability: unknown capability "${r.capability}" (${principals.source} declares ${Object.keys(principals.capabilities).join(", ")})`);
      continue;
    }
    if (!spec?.addresses.includes(r.capability)) problems.push(`${at}/capability: principal ${gateway} does not address ${r.capability} in ${principals.source}`);
    if (!spec?.emits.some((e) => emitsCovers(e, type))) problems.push(`${at}: principal ${gateway} may not emit ${type} (its emits in ${principals.source})`);
    if (!schemas.has(r.dataschema)) problems.push(`${at}/dataschema: no schema in schemas/ has $id ${r.dataschema}`);
    routes.set(type, Object.freeze({
      type, ref: r.capability, capability: cap.name, major: cap.major, dataschema: r.dataschema,
      subject: cap.critical ? subjects.handoff(cap.name, cap.major) : subjects.capability(cap.name, cap.major),
    }));
  }
  if (problems.length > 0) throw invalidFile(path, ErrorCode.RoutesInvalid, problems);
  return routes;
}
