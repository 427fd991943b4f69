// The lineage API as NATS micro-service endpoints: `mesh.ctl.lineage.<operation>`, request body a JSON object
// of parameters (or empty), reply `{"ok":true,"result":…}` or `{"ok":false,"code":"CW_ERR_…","error":"…"}`.
// `nats micro ls` shows the service; `nats req mesh.ctl.lineage.why '{"id":"…"}'` asks a question.
import type { Service } from "@nats-io/services";
import { CausewayError, ErrorCode, isCausewayError, type MeshSubjects } from "../kit/index.ts";
import type { LineageApi, Params } from "./api.ts";

export function addLineageEndpoints(service: Service, api: LineageApi, subjects: MeshSubjects): void {
  for (const [name, op] of Object.entries(api)) {
    service.addEndpoint(name, {
      subject: subjects.control("lineage", name),
      metadata: { description: op.description, params: op.params.join(",") },
      handler: (err, msg) => {
        if (err) return;
        void (async () => {
          try {
            const result = await op.run(parseParams(msg.data));
            msg.respond(JSON.stringify({ ok: true, result }));
          } catch (e) {
            msg.respond(JSON.stringify(errorReply(e)));
          }
        })();
      },
    });
  }
}

/** The error reply every lineage interface gives. */
export function errorReply(e: unknown): { ok: false; code: string; error: string } {
  return { ok: false, code: isCausewayError(e) ? e.code : ErrorCode.Internal, error: (e as Error).message };
}

function parseParams(data: Uint8Array): Params {
  if (data.length === 0) return {};
  const text = Buffer.from(data).toString("utf8").trim();
  if (text === "") return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new CausewayError(ErrorCode.LineageQuery, 'the request body must be a JSON object of parameters, e.g. {"id":"…"}');
  }
  return Object.fromEntries(Object.entries(parsed).map(([k, v]) => [k, v === undefined || v === null ? undefined : String(v)]));
}
