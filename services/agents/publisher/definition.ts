// The publisher serves the critical capability publish.v1: it publishes a finished report outside the mesh,
// which cannot be undone. Its work arrives only through the coordinator — after an approval and under a lease —
// and the runtime runs it at most once per grant. The outbox directory stands in for the external system: the
// report lands there as one file per request, stamped with the lease revision as fencing token.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type { AgentDefinition } from "../../kit/index.ts";
import type { PublisherConfig } from "./config.ts";

const REPORT_SCHEMA = "https://causeway.dev/schemas/report.published/1.0.0";
const RELEASED_SCHEMA = "https://causeway.dev/schemas/report.released/1.0.0";

interface Report { requestId: string; title: string; complete: boolean; findingsCount: number; sections: { heading: string; body: string }[] }

export function createPublisherDefinition(deps: { config: PublisherConfig }): AgentDefinition<Report> {
  return {
    principal: "publisher", capability: "publish", major: 1, version: "1.0.0",
    description: "Publishes a finished report outside the mesh, once, under a coordinator grant",
    accepts: { "report.published": REPORT_SCHEMA },
    emits: { "report.released": RELEASED_SCHEMA },
    critical: true,
    concurrency: 4,
    handler(input, ctx) {
      const fencing = ctx.lease!.revision;
      mkdirSync(deps.config.outboxDir, { recursive: true });
      const file = join(deps.config.outboxDir, `${input.data.requestId.replace(/[^A-Za-z0-9_-]/g, "_")}.json`);
      // "wx": never overwrite — the external system refuses a second publication, as a real one would.
      writeFileSync(file, JSON.stringify({ ...input.data, publishedAt: new Date().toISOString(), fencingToken: fencing, eventId: input.event.id }, null, 2) + "\n", { flag: "wx" });
      ctx.log.info({ requestId: input.data.requestId, file, fencing }, "report published");
      return [{
        to: ctx.subjects.event("report.released", 1), type: "report.released",
        data: { requestId: input.data.requestId, location: pathToFileURL(file).href, leaseRevision: fencing },
      }];
    },
  };
}
