// The lineage API as NATS micro-service endpoints: `mesh.ctl.lineage.<operation>`, request body a JSON object of
// parameters (or empty), as contract.ts declares them. A reply is the operation's result; a refusal is the
// control plane's error (services/kit/control.ts). `nats micro ls` shows the service;
// `nats req --inbox-prefix _INBOX_auditor mesh.ctl.lineage.why '{"id":"…"}'` asks a question.
import type { Service } from "@nats-io/services";
import type { Logger } from "pino";
import { addControlEndpoint, type MeshSubjects, type ServedControlEndpoint } from "../kit/index.ts";
import type { LineageApi } from "./api.ts";
import { lineageEndpoint, type LineageOperationName } from "./contract.ts";

/** Serves every operation of `api`; stop() refuses new questions and waits for those being answered. */
export function addLineageEndpoints(service: Service, api: LineageApi, subjects: MeshSubjects, log: Logger): ServedControlEndpoint {
  const served = (Object.keys(api) as LineageOperationName[]).map((name) =>
    addControlEndpoint(service, lineageEndpoint(name), { subjects, log, handle: (params) => api[name].run(params) }));
  return {
    async stop() {
      await Promise.all(served.map((e) => e.stop()));
    },
  };
}
