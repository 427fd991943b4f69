// The researcher's deterministic "model": a small built-in corpus, so the mesh runs without any external
// service and the same query always yields the same finding. Each entry has keywords and three facts, one per
// aspect the planner uses (background, current state, risks). A query picks the entry sharing the most words
// with its keywords (ties: the first in corpus order) and the fact of the first aspect word in the query
// (default: current state). Evidence cites the corpus itself (urn:causeway:corpus:…), never a real web page.
// A query containing the word "rumor" (or "rumour", plural too) yields a claim with confidence 0.3, below the
// verifier's default threshold of 0.6: the demo's quarantine (low_confidence).

/** One piece of evidence: an absolute source URI and the passage that supports the claim, verbatim. */
export interface Evidence {
  source: string;
  quote: string;
}

/** What research produces for one query (research.finding.created without the task id). */
export interface Research {
  claim: string;
  evidence: Evidence[];
  confidence: number;
}

interface Fact {
  claim: string;
  quote: string;
  confidence: number;
}

interface Entry {
  id: string;
  keywords: readonly string[];
  /** background, current state, risks. */
  facts: readonly [Fact, Fact, Fact];
}

/** The confidence of a rumour: below the verifier's default minimum (0.6), so it is quarantined. */
export const RUMOR_CONFIDENCE = 0.3;

const CORPUS: readonly Entry[] = [
  {
    id: "battery-chemistry",
    keywords: ["battery", "batteries", "chemistry", "chemistries", "lithium", "lfp", "sodium", "nmc", "cell", "cells", "storage"],
    facts: [
      { claim: "Grid-scale battery storage grew out of the lithium-ion cells made for electronics and electric vehicles.", quote: "Stationary battery storage reused the lithium-ion cell designs that electronics and electric vehicles had made cheap.", confidence: 0.82 },
      { claim: "Lithium iron phosphate (LFP) is the leading chemistry for new grid-scale battery installations.", quote: "Most new grid-scale installations use lithium iron phosphate (LFP) cells, valued for cost, cycle life and thermal stability.", confidence: 0.88 },
      { claim: "Thermal runaway, which can start fires, is the main safety risk of grid-scale battery installations.", quote: "Thermal runaway, in which a failing cell heats its neighbours, is the main safety risk of large battery installations.", confidence: 0.85 },
    ],
  },
  {
    id: "battery-cost",
    keywords: ["cost", "costs", "price", "prices", "mwh", "kwh", "megawatt", "kilowatt", "hour", "capex", "cheap", "expensive", "economics", "money"],
    facts: [
      { claim: "The cost of battery storage is quoted per unit of energy capacity, in currency per kWh or per MWh.", quote: "Storage projects quote cost per unit of energy capacity, as currency per kWh or per MWh of storage.", confidence: 0.84 },
      { claim: "The installed cost per MWh of grid-scale battery storage has fallen over the past decade, driven mainly by cheaper cells.", quote: "Installed cost per MWh has fallen over the past decade, mostly because cells became cheaper.", confidence: 0.8 },
      { claim: "Raw-material prices, lithium's above all, make the cost of battery storage volatile.", quote: "Swings in raw-material prices, lithium above all, pass through to the cost of storage.", confidence: 0.78 },
    ],
  },
  {
    id: "jetstream",
    keywords: ["nats", "jetstream", "stream", "streams", "messaging", "broker", "queue", "queues", "consumer", "consumers"],
    facts: [
      { claim: "JetStream is the persistence layer of NATS, added to the core publish-subscribe system.", quote: "JetStream adds persistence to NATS: messages published on a subject are stored in a stream.", confidence: 0.9 },
      { claim: "JetStream redelivers a stored message until a consumer acknowledges it.", quote: "A stored message is redelivered to the consumer until the consumer acknowledges it.", confidence: 0.92 },
      { claim: "Without an fsync on every write, a coordinated power loss can lose messages JetStream already acknowledged.", quote: "With lazy fsync, a power loss on every node at once can lose writes that were already acknowledged.", confidence: 0.8 },
    ],
  },
  {
    id: "signing",
    keywords: ["signature", "signatures", "signing", "signed", "sign", "dsse", "verify", "verification", "verifiability", "tamper", "tampering", "cloudevents"],
    facts: [
      { claim: "The CloudEvents Verifiability extension signs events with DSSE envelopes.", quote: "The Verifiability extension carries a DSSE envelope that signs a digest of the event.", confidence: 0.88 },
      { claim: "A consumer that verifies the signature before parsing detects tampered event data.", quote: "Verifying the signature before parsing the data lets a consumer detect tampering.", confidence: 0.9 },
      { claim: "A signature proves nothing once its key is revoked or leaked, so keys need rotation and revocation.", quote: "A leaked key signs anything: keys need a validity window, rotation and revocation.", confidence: 0.84 },
    ],
  },
  {
    id: "agents",
    keywords: ["agent", "agents", "choreography", "orchestration", "orchestrator", "workflow", "workflows", "mesh", "llm", "ai"],
    facts: [
      { claim: "In a choreography, services react to events instead of being sequenced by a central orchestrator.", quote: "In a choreography each service reacts to events; no central orchestrator sequences the work.", confidence: 0.86 },
      { claim: "AI agent services are increasingly connected through event streams rather than direct calls.", quote: "Agent services increasingly exchange work through event streams rather than direct calls.", confidence: 0.7 },
      { claim: "Critical steps of an agent choreography need explicit handoffs, such as grants, leases or human approval.", quote: "Irreversible steps need explicit handoffs: a grant, a lease, or a human approval.", confidence: 0.83 },
    ],
  },
  {
    id: "audit",
    keywords: ["audit", "auditor", "auditors", "lineage", "merkle", "provenance", "log", "logs", "compliance"],
    facts: [
      { claim: "Merkle trees, as in Certificate Transparency, make append-only logs tamper-evident.", quote: "Certificate Transparency uses Merkle trees so an append-only log becomes tamper-evident.", confidence: 0.9 },
      { claim: "Signed checkpoints let anyone check that an audit log still matches what was published.", quote: "Anyone holding a signed checkpoint can check that the log still matches it.", confidence: 0.86 },
      { claim: "A tamper-evident log detects changes but does not prevent them; the checkpoints must be kept elsewhere.", quote: "Tamper evidence detects changes, it does not prevent them: keep checkpoints outside the log.", confidence: 0.82 },
    ],
  },
  {
    id: "idempotency",
    keywords: ["idempotent", "idempotency", "duplicate", "duplicates", "redelivery", "redelivered", "retry", "retries", "exactly"],
    facts: [
      { claim: "At-least-once delivery makes duplicate messages normal, so consumers must be idempotent.", quote: "At-least-once delivery means duplicates are normal; consumers must be idempotent.", confidence: 0.88 },
      { claim: "Deriving output ids from the input lets a redelivered input republish the same ids, which deduplication absorbs.", quote: "Outputs with ids derived from the input are republished with the same ids, and deduplication absorbs them.", confidence: 0.87 },
      { claim: "Deduplication windows are bounded, so a replay after the window needs another guard for irreversible effects.", quote: "A duplicate window is bounded in time: a replay after it needs another guard for irreversible effects.", confidence: 0.84 },
    ],
  },
];

const FALLBACK_QUOTE =
  "The built-in corpus covers grid-scale batteries (chemistry, cost), NATS JetStream, signed events, agent choreography, audit logs and idempotent delivery.";
const ASPECT_WORDS: readonly (readonly string[])[] = [
  ["background", "history", "origin", "origins", "came", "began"],
  ["current", "today", "used", "practised", "practiced", "state", "lead", "leading", "adoption", "now"],
  ["risk", "risks", "limitation", "limitations", "danger", "dangers", "safety", "threat", "threats", "open"],
];
const RUMOR = /\brumou?rs?\b/i;
const WORD = /[a-z0-9]+/g;

/** True when the query contains the word rumor / rumour (singular or plural). */
export function isRumor(query: string): boolean {
  return RUMOR.test(query);
}

/** Researches `query` from the built-in corpus: a pure function of the query. */
export function researchFromCorpus(query: string): Research {
  return research(query, false);
}

/**
 * Researcher 1.1.0's reading of the corpus: the same entry and the same claim as {@link researchFromCorpus}, but
 * it cites every fact of the entry (the claim's own first, then the other aspects) and states the mean confidence
 * of what it cites — broader evidence, more cautious confidence. A rumour or a query the corpus does not cover
 * yields what 1.0.0 yields. A pure function of the query.
 */
export function researchBroadlyFromCorpus(query: string): Research {
  return research(query, true);
}

function research(query: string, broadly: boolean): Research {
  if (isRumor(query)) {
    return {
      claim: `Unconfirmed: a rumour circulates about "${clip(query, 300)}", but no primary source confirms it.`,
      evidence: [{ source: "urn:causeway:corpus:hearsay", quote: "Someone said so on a forum; no primary source confirms the rumour." }],
      confidence: RUMOR_CONFIDENCE,
    };
  }
  const ordered = query.toLowerCase().match(WORD) ?? [];
  const words = new Set(ordered);
  let best: Entry | undefined;
  let bestScore = 0;
  for (const entry of CORPUS) {
    const score = entry.keywords.filter((k) => words.has(k)).length;
    if (score > bestScore) {
      best = entry;
      bestScore = score;
    }
  }
  if (best === undefined) {
    return {
      claim: `The built-in corpus has no entry that covers "${clip(query, 300)}".`,
      evidence: [{ source: "urn:causeway:corpus:index", quote: FALLBACK_QUOTE }],
      confidence: 0.7,
    };
  }
  // The first aspect word of the query decides (the planner's templates start with theirs).
  let index = 1;
  for (const word of ordered) {
    const aspect = ASPECT_WORDS.findIndex((list) => list.includes(word));
    if (aspect !== -1) {
      index = aspect;
      break;
    }
  }
  const fact = best.facts[index]!;
  if (broadly) {
    const cited = [index, ...[0, 1, 2].filter((i) => i !== index)];
    const mean = cited.reduce((sum, i) => sum + best.facts[i]!.confidence, 0) / cited.length;
    return {
      claim: fact.claim,
      evidence: cited.map((i) => ({ source: `urn:causeway:corpus:${best.id}:${i}`, quote: best.facts[i]!.quote })),
      confidence: Math.round(mean * 100) / 100,
    };
  }
  return {
    claim: fact.claim,
    evidence: [{ source: `urn:causeway:corpus:${best.id}:${index}`, quote: fact.quote }],
    confidence: fact.confidence,
  };
}

function clip(text: string, max: number): string {
  const t = text.replace(/\s+/g, " ").trim();
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
}
