// Sign + encode and decode + verify of a typical mesh event, against raw node:crypto sign / verify of the
// same DSSE material (PAE bytes prepared in advance): what the envelope costs on top of the signature.
import { sign as rawSign, verify as rawVerify } from "node:crypto";
import { createUser } from "@nats-io/nkeys";
import { compare, type Comparison } from "./measure.ts";
import {
  DSSE_PAYLOAD_TYPE, NatsBinding, createEvent, createKeyring, openEnvelope, outputEventInit, pae, signEvent, signingKeyFromNkeySeed, uuidv7, verifyEvent, type CloudEvent,
} from "../../services/kit/index.ts";

export async function cryptoBenchmarks(): Promise<Comparison[]> {
  const key = signingKeyFromNkeySeed(new TextDecoder().decode(createUser().getSeed()));
  const ring = createKeyring([key]);
  const root = createEvent({ id: uuidv7(), source: "https://crm.example", type: "report.requested", time: new Date().toISOString(), extensions: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" }, data: "{}" });
  // ~1 KiB JSON data, the extensions every mesh output carries.
  const data = JSON.stringify({ claim: "x".repeat(900), confidence: 0.82, evidence: [{ source: "https://example.org/a", quote: "q" }] });
  const N = 512;
  const events: CloudEvent[] = Array.from({ length: N }, (_, i) => createEvent(outputEventInit(root, "researcher", i, {
    type: "research.finding.created", dataschema: "https://causeway.dev/schemas/research.finding.created/1.0.0", data,
  })));
  const signed = events.map((e) => signEvent(e, key));
  const messages = signed.map((e) => NatsBinding.binary(e));
  const paes = signed.map((e) => pae(DSSE_PAYLOAD_TYPE, openEnvelope(e.extensions.dssematerial).payload));
  const sigs = signed.map((e) => openEnvelope(e.extensions.dssematerial).signatures[0]!.sig);
  let i = 0;
  const results: Comparison[] = [];
  results.push(await compare("sign + encode (binary mode)",
    { name: "signEvent + NatsBinding.binary", run: (n) => { for (let k = 0; k < n; k++, i++) NatsBinding.binary(signEvent(events[i % N]!, key)); } },
    { name: "crypto.sign(PAE)", run: (n) => { for (let k = 0; k < n; k++, i++) rawSign(null, paes[i % N]!, key.privateKey); } },
    { ops: 3000, goal: 0.9 }));
  results.push(await compare("decode + verify (binary mode)",
    { name: "NatsBinding.toEvent + verifyEvent", run: (n) => { for (let k = 0; k < n; k++, i++) verifyEvent(NatsBinding.toEvent(messages[i % N]!), ring); } },
    { name: "crypto.verify(PAE)", run: (n) => { for (let k = 0; k < n; k++, i++) rawVerify(null, paes[i % N]!, key.publicKey, sigs[i % N]!); } },
    { ops: 1500, goal: 0.9 }));
  return results;
}
