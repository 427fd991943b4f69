// Offline checks for `causeway lineage check-proof | check-export`: nothing but the file and lineage's public
// key — no NATS, no store. What an auditor runs on evidence handed to them.
import { checkExport, verifyConsistencyProof, verifyEventProof } from "../lineage/contract.ts";

export interface OfflineOutcome {
  readonly ok: boolean;
  readonly message: string;
}

export function checkFile(kind: "check-proof" | "check-export", text: string, publicKey: string): OfflineOutcome {
  return kind === "check-proof" ? checkProof(text, publicKey) : checkExportFile(text, publicKey);
}

function checkProof(text: string, publicKey: string): OfflineOutcome {
  let proof: unknown;
  try {
    proof = JSON.parse(text);
  } catch (err) {
    return { ok: false, message: `✗ not a proof: the file is not JSON (${(err as Error).message})` };
  }
  const isConsistency = typeof proof === "object" && proof !== null && "from" in proof && "to" in proof;
  const verdict = isConsistency ? verifyConsistencyProof(proof, publicKey) : verifyEventProof(proof, publicKey);
  if (!verdict.ok) return { ok: false, message: `✗ the proof does not verify: ${verdict.message} (${verdict.reason})` };
  if (isConsistency) {
    const p = proof as { from: { size: number }; to: { size: number } };
    return { ok: true, message: `✓ consistency proof verifies: the log signed at size ${p.from.size} is a prefix of the log signed at size ${p.to.size}` };
  }
  const p = proof as { index: number; size: number; root: string };
  return { ok: true, message: `✓ inclusion proof verifies: record ${p.index} is in the log signed at size ${p.size} (root ${p.root})` };
}

function checkExportFile(text: string, publicKey: string): OfflineOutcome {
  const r = checkExport(text, publicKey);
  if (!r.ok) return { ok: false, message: `✗ the export does not verify: line ${r.line}: ${r.message} (${r.reason}); ${r.records} record lines passed before it` };
  return { ok: true, message: `✓ ${r.format} export verifies: ${r.records} records, each re-hashed and proved against the checkpoint of ${r.checkpoint.origin} at size ${r.checkpoint.size} (root ${r.checkpoint.root}, ${r.checkpoint.time})` };
}
