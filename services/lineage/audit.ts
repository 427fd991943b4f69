// `verify`: whole-log integrity. Every stored record is re-hashed from its canonical bytes and checked against
// its position, its stored leaf hash and its query columns; the Merkle root recomputed from those bytes must
// equal the root of every signed checkpoint; every stored subtree hash (what proofs read) must equal the one
// recomputed, and none may lie beyond the log; the checkpoints must carry lineage's signature, and the store's
// copies must be the ones published on MESH_AUDIT. So a changed field, a deleted, inserted or reordered record,
// a truncated tail, a changed, missing or inserted subtree hash or a rewritten checkpoint each shows up, and the
// report names the first bad entry.
import type { VerificationKey } from "../kit/index.ts";
import { verifyCheckpoint } from "./checkpoint.ts";
import { createMerkleLog, leafHash, nodeLeaves, type NodeHash, type NodeId } from "./merkle.ts";
import { columnMismatches, columnsOf, decodeRecord } from "./record.ts";
import type { LineageStore, StoredCheckpoint } from "./store.ts";

/** One thing wrong with the log. `index` names the record, `node` the stored subtree hash, `size` the checkpoint. */
export interface AuditProblem {
  readonly kind: "record" | "node" | "checkpoint" | "state";
  readonly index?: number;
  readonly node?: NodeId;
  readonly size?: number;
  readonly message: string;
}

export interface AuditReport {
  readonly ok: boolean;
  /** Records read, and the size the log's state claims. */
  readonly records: number;
  readonly stateSize: number;
  /** Signed checkpoints whose root was recomputed and matched, and the newest of them. */
  readonly checkpointsVerified: number;
  readonly latest?: { readonly size: number; readonly root: string; readonly time: string };
  /** Records appended after the newest checkpoint: intact as far as the log's state says, not yet signed for. */
  readonly uncheckpointed: number;
  /** The first problem by position (records, then checkpoints and state, then stored subtree hashes), and all problems (at most 100). */
  readonly firstBad?: AuditProblem;
  readonly problems: readonly AuditProblem[];
}

export interface AuditOptions {
  /** Lineage's checkpoint key. */
  readonly publicKey: Pick<VerificationKey, "publicKey">;
  /** The notes published on MESH_AUDIT, when the auditor can read the stream (the authority). */
  readonly published?: readonly string[];
  /** Records per read. Default 5,000. */
  readonly chunk?: number;
  /** Progress after each chunk. */
  readonly onProgress?: (done: number, total: number) => void;
}

const MAX_PROBLEMS = 100;
/** Subtree hash problems reported one by one; past this many, one line counts the rest. */
const MAX_NODE_PROBLEMS = 10;

export async function verifyLog(store: LineageStore, opts: AuditOptions): Promise<AuditReport> {
  const problems: AuditProblem[] = [];
  const report = (p: AuditProblem) => {
    if (problems.length < MAX_PROBLEMS) problems.push(p);
  };
  const state = await store.state();
  const anchors = checkpointsToCheck(await store.checkpoints(), opts, report);
  const lastAnchorSize = anchors.at(-1)?.size ?? 0;
  const end = Math.max(state.size, lastAnchorSize);
  const chunk = opts.chunk ?? 5_000;

  // Recompute the tree from the records' own bytes; the stored leaf and subtree hashes are only compared, never trusted.
  const completed: NodeHash[] = [];
  const tree = createMerkleLog({ leafAt: () => { throw new Error("not needed"); }, onComplete: (node) => completed.push(node) });
  let badNodes = 0;
  const nodeProblem = (node: NodeId, what: string) => {
    if (++badNodes > MAX_NODE_PROBLEMS) return;
    const [from, to] = nodeLeaves(node);
    report({ kind: "node", node: { level: node.level, index: node.index }, message: `the stored hash of records [${from}, ${to}) (level ${node.level}, index ${node.index}) ${what}` });
  };
  // The subtree hashes the chunk's records completed, against the stored ones.
  const checkNodes = async () => {
    const stored = await store.nodeHashes(completed);
    completed.forEach((node, i) => {
      const found = stored[i];
      if (found === undefined) nodeProblem(node, "is missing (deleted): proofs that need it fail");
      else if (!found.equals(node.hash)) {
        nodeProblem(node, recordProblem
          ? "does not match the records (follows from the bad records above)"
          : "does not match the records: it, or records under it, were changed behind the store's back; proofs through it fail");
      }
    });
    completed.length = 0;
  };
  let next = 0; // the index the next record must have
  let pendingAnchor = 0;
  let verified = 0;
  let latest: AuditReport["latest"];
  let recordProblem = false;
  const checkAnchorsUpTo = (size: number) => {
    while (pendingAnchor < anchors.length && anchors[pendingAnchor]!.size <= size) {
      const a = anchors[pendingAnchor++]!;
      if (a.size > tree.size) continue; // the log ends before it: reported below as a truncation
      const root = tree.root().toString("base64");
      if (root === a.root) {
        verified++;
        latest = { size: a.size, root: a.root, time: a.time };
      } else {
        const since = latest?.size ?? 0;
        report({
          kind: "checkpoint", size: a.size,
          message: recordProblem
            ? `root at size ${a.size} does not match the signed checkpoint (follows from the bad records above)`
            : `root at size ${a.size} does not match the signed checkpoint: records in [${since}, ${a.size}) were changed consistently (bytes, leaf hash and columns), which only the checkpoint reveals`,
        });
      }
    }
  };

  for (let from = 0; from < end; from += chunk) {
    const rows = await store.range(from, Math.min(from + chunk, end));
    for (const row of rows) {
      const at = row.columns.index;
      if (at !== next) {
        recordProblem = true;
        report({ kind: "record", index: next, message: at > next ? `records ${next}…${at - 1} are missing (deleted)` : `record ${at} is out of order` });
        // Continue from what is there, so later problems are still found; the roots will not match from here.
      }
      const bytes = row.bytes;
      const h = leafHash(bytes);
      try {
        const record = decodeRecord(bytes);
        if (record.index !== at) {
          recordProblem = true;
          report({ kind: "record", index: at, message: `record stored at ${at} says it is record ${record.index} (reordered or inserted)` });
        }
        const wrong = columnMismatches(row.columns, columnsOf(record));
        if (wrong.length > 0) {
          recordProblem = true;
          report({ kind: "record", index: at, message: `columns ${wrong.join(", ")} differ from the record's signed-for bytes` });
        }
      } catch (err) {
        recordProblem = true;
        report({ kind: "record", index: at, message: `record bytes are not a record: ${(err as Error).message}` });
      }
      if (!h.equals(row.leafHash)) {
        recordProblem = true;
        report({ kind: "record", index: at, message: "record bytes do not hash to the stored leaf hash (changed after it was recorded)" });
      }
      tree.append(h);
      next = at + 1;
      checkAnchorsUpTo(tree.size);
    }
    await checkNodes();
    opts.onProgress?.(Math.min(from + chunk, end), end);
  }
  for (const node of await store.strayNodes(state.size, MAX_NODE_PROBLEMS)) nodeProblem(node, `is beyond the log's ${state.size} records (inserted)`);
  if (badNodes > MAX_NODE_PROBLEMS) report({ kind: "node", message: `${badNodes - MAX_NODE_PROBLEMS} more stored subtree hashes are wrong, missing or beyond the log` });
  // A record past the log's state is an insertion at the tail.
  const beyond = await store.range(end, end + 1);
  if (beyond.length > 0) report({ kind: "record", index: beyond[0]!.columns.index, message: `record ${beyond[0]!.columns.index} is beyond the log's size ${end} (inserted)` });
  if (tree.size < lastAnchorSize) {
    report({ kind: "record", index: tree.size, message: `the log ends at ${tree.size} records but a checkpoint was signed at size ${lastAnchorSize} (truncated)` });
  }
  if (tree.size !== state.size) report({ kind: "state", size: state.size, message: `the log's state says ${state.size} records; ${tree.size} are stored` });
  else if (!sameHashes(tree.frontier(), state.frontier)) report({ kind: "state", size: state.size, message: "the log's stored frontier does not match its records" });

  const firstBad = [...problems].sort(byPosition)[0];
  return {
    ok: problems.length === 0, records: tree.size, stateSize: state.size, checkpointsVerified: verified,
    ...(latest && { latest }), uncheckpointed: Math.max(0, tree.size - (latest?.size ?? 0)),
    ...(firstBad && { firstBad }), problems,
  };
}

// The checkpoints to check roots against: the published ones when given (the authority), else the store's
// copies; every one must carry lineage's signature, and a store copy must equal the published note.
function checkpointsToCheck(stored: readonly StoredCheckpoint[], opts: AuditOptions, report: (p: AuditProblem) => void): StoredCheckpoint[] {
  const valid = (note: string, where: string): StoredCheckpoint | undefined => {
    const verdict = verifyCheckpoint(note, opts.publicKey);
    if (!verdict.ok) {
      report({ kind: "checkpoint", message: `${where}: ${verdict.message} (${verdict.reason})` });
      return undefined;
    }
    const c = verdict.checkpoint;
    return { size: c.size, root: c.root, time: c.time, note, auditSeq: 0 };
  };
  const fromStore = stored.flatMap((s) => {
    const c = valid(s.note, `stored checkpoint at size ${s.size}`);
    if (c && (c.size !== s.size || c.root !== s.root)) {
      report({ kind: "checkpoint", size: s.size, message: `stored checkpoint at size ${s.size}: its columns differ from its signed note` });
    }
    return c ? [c] : [];
  });
  if (opts.published === undefined) return fromStore.sort((a, b) => a.size - b.size);
  const published = opts.published.flatMap((note, i) => valid(note, `published checkpoint ${i + 1}`) ?? []);
  const bySize = new Map(published.map((c) => [c.size, c]));
  for (const s of stored) {
    const p = bySize.get(s.size);
    if (!p) report({ kind: "checkpoint", size: s.size, message: `stored checkpoint at size ${s.size} was never published on MESH_AUDIT` });
    else if (p.note !== s.note) report({ kind: "checkpoint", size: s.size, message: `stored checkpoint at size ${s.size} differs from the one published on MESH_AUDIT` });
  }
  return published.sort((a, b) => a.size - b.size);
}

function byPosition(a: AuditProblem, b: AuditProblem): number {
  // Records first, then what the signed checkpoints say, then the stored subtree hashes (derived data).
  const rank = (p: AuditProblem) => (p.kind === "record" ? 0 : p.kind === "node" ? 2 : 1);
  const position = (p: AuditProblem) => p.index ?? (p.node ? nodeLeaves(p.node)[0] : p.size ?? 0);
  return rank(a) - rank(b) || position(a) - position(b);
}

function sameHashes(a: readonly Buffer[], b: readonly Buffer[]): boolean {
  return a.length === b.length && a.every((h, i) => h.equals(b[i]!));
}
