// Helpers for the security tests: watching a connection for the server's permission violations, telling a
// refusal from another failure, and blind responders — micro services registered as a service principal that
// answer every request on whatever reply subject it carries, as if the code-side check were bypassed.
import { PermissionViolationError } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { Svcm, type Service } from "@nats-io/services";
import type { Principals } from "../../services/kit/index.ts";
import { permissionsFor } from "../../services/kit/ops/index.ts";

/** The permission violations the server reported on one connection, as they arrive. */
export interface Violations {
  readonly seen: readonly PermissionViolationError[];
  has(operation: "publish" | "subscription", subject: string): boolean;
  /** A round trip to the server, twice: every -ERR for what was sent before has been read and recorded. */
  settle(): Promise<void>;
  stop(): void;
}

export function watchViolations(nc: NatsConnection): Violations {
  const seen: PermissionViolationError[] = [];
  const status = nc.status()[Symbol.asyncIterator]();
  void (async () => {
    for (let s = await status.next(); !s.done; s = await status.next()) {
      if (s.value.type === "error" && s.value.error instanceof PermissionViolationError) seen.push(s.value.error);
    }
  })();
  return {
    seen,
    has: (operation, subject) => seen.some((e) => e.operation === operation && e.subject === subject),
    async settle() {
      // The server answers a PUB/SUB it refuses with -ERR before the PONG of the next flush; the second round
      // trip lets the status iterator, a microtask behind, record it.
      await nc.flush();
      await nc.flush();
    },
    // Not awaited: an async generator finishes return() only after its pending next().
    stop: () => void status.return?.(),
  };
}

/** True when `err` (or its cause) is the server refusing a subject. */
export function isPermissionRefusal(err: unknown): boolean {
  return err instanceof PermissionViolationError || (err as Error | undefined)?.cause instanceof PermissionViolationError;
}

/** Runs `action`: "allowed" when it succeeds, "refused" on a permission violation; anything else is thrown. */
export async function outcomeOf(action: () => Promise<unknown>): Promise<"allowed" | "refused"> {
  try {
    await action();
    return "allowed";
  } catch (err) {
    if (isPermissionRefusal(err)) return "refused";
    throw err;
  }
}

/** A service principal's blind responder: its connection, violations, and how many requests it answered. */
export interface BlindResponder {
  readonly principal: string;
  readonly nc: NatsConnection;
  readonly violations: Violations;
  answered(): number;
}

/**
 * Registers, for each principal with a service, a NATS micro service under its name connected as that principal,
 * with endpoints on every control subject its permissions let it serve; each answers every request blindly.
 * Discovery ($SRV.PING|INFO|STATS) is answered by the micro library itself, also blindly.
 */
export async function startBlindResponders(principals: Principals, connect: (name: string) => Promise<NatsConnection>): Promise<BlindResponder[]> {
  const out: BlindResponder[] = [];
  for (const spec of Object.values(principals.principals).filter((p) => p.service !== undefined)) {
    const nc = await connect(spec.name);
    const violations = watchViolations(nc);
    let answered = 0;
    // @nats-io/services ships its own copy of nats-core, so its NatsConnection type differs from ours (not its shape).
    const service: Service = await new Svcm(nc).add({ name: spec.service!, version: "0.0.1", description: "blind responder" });
    const served = permissionsFor(principals, spec.name).subscribe.map((g) => g.subject).filter((s) => s.startsWith(`${principals.prefix}.ctl.`));
    served.forEach((subject, i) => {
      service.addEndpoint(`blind-${i}`, {
        subject,
        handler: (_err, msg) => {
          answered++;
          msg.respond("answered blindly");
        },
      });
    });
    await nc.flush();
    out.push({ principal: spec.name, nc, violations, answered: () => answered });
  }
  return out;
}
