#!/usr/bin/env bash
# A rollout that a failing candidate rolls back on its own (issue 15, item 8), as an operator runs it:
#   1. `causeway up` — a local mesh, the researcher at 1.0.0 (stable);
#   2. `causeway start researcher@1.1.0` — the second implementation beside it, made to fail 30 % of its inputs
#      on their first delivery (CAUSEWAY_RESEARCHER_FAIL_PERCENT, CAUSEWAY_RESEARCHER_FAIL_DELIVERIES);
#   3. `causeway rollout start research.v1 --candidate 1.1.0` — half of the new flows go to 1.1.0;
#   4. report requests through the gateway until the coordinator rolls 1.1.0 back on its own (its failure rate
#      exceeds the stable one's by more than the margin), then `causeway rollout status` and the signed
#      decision.rollout events;
#   5. `causeway lineage trace` of a flow whose research ran on 1.1.0 and of one that ran on 1.0.0.
# Every flow completes: the candidate's failed inputs are retried (on it), and after the rollback its remaining
# flows go to the stable version. The mesh runs in a temporary data directory (CAUSEWAY_DATA_DIR to choose one)
# on the default ports, and is stopped at the end.
#   make demo-rollout   (or scripts/rollout-demo.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PWD/node_modules/.bin:$PATH"
export CAUSEWAY_DATA_DIR="${CAUSEWAY_DATA_DIR:-$(mktemp -d -t causeway-rollout-XXXXXX)}"
GATEWAY="${CAUSEWAY_GATEWAY_URL:-http://127.0.0.1:8480}"
MAX_REQUESTS="${MAX_REQUESTS:-120}"

cw() { echo "\$ causeway $*"; bin/causeway "$@"; }
stop() { bin/causeway down >/dev/null 2>&1 || true; }
trap stop EXIT

echo "# a local mesh in $CAUSEWAY_DATA_DIR"
bin/causeway up >/dev/null
echo "# the candidate beside the stable researcher: fails 30 % of its inputs once"
CAUSEWAY_RESEARCHER_FAIL_PERCENT=30 CAUSEWAY_RESEARCHER_FAIL_DELIVERIES=1 cw start researcher@1.1.0
live() { bin/causeway agents --json 2>/dev/null | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const c=JSON.parse(s).find(x=>x.capability==="research.v1");process.exit(c&&c.instances.some(i=>i.version===process.argv[1])?0:1)})' "$1"; }
for _ in $(seq 1 60); do live 1.1.0 && break; sleep 0.5; done
live 1.1.0 || { echo "researcher@1.1.0 did not come up: bin/causeway logs researcher@1.1.0" >&2; exit 1; }

cw rollout start research.v1 --candidate 1.1.0 --steps 50,100 --interval 10m --min-flows 10 --reason "try the three-fact researcher"

candidate() { bin/causeway rollout status research.v1 --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const t=JSON.parse(s).capabilities[0].table;process.stdout.write(t&&t.candidate?t.candidate.version:"")})'; }
echo "# report requests until the coordinator decides"
sent=0
token="$(cat "$CAUSEWAY_DATA_DIR/tokens/upstream-demo.token")"
while [ -n "$(candidate)" ] && [ "$sent" -lt "$MAX_REQUESTS" ]; do
  curl -s -o /dev/null -X POST "$GATEWAY/events" -H "Authorization: Bearer $token" -H "Content-Type: application/json" \
    -H "ce-specversion: 1.0" -H "ce-id: rollout-demo-$sent-$$" -H "ce-source: https://demo.causeway.dev/requests" -H "ce-type: report.requested" \
    -H "ce-dataschema: https://causeway.dev/schemas/report.requested/1.0.0" \
    -d "{\"topic\":\"rollout demo $sent\",\"requester\":\"ops@example.com\",\"questions\":[\"What is the boiling point of water at sea level?\",\"Who proved Fermat's Last Theorem?\"]}"
  sent=$((sent + 1))
  sleep 0.25
done
echo "# $sent requests sent"
[ -z "$(candidate)" ] || { echo "no decision after $sent requests" >&2; exit 1; }
cw rollout status research.v1
cw lineage events --type decision.rollout

echo "# a flow whose research ran on each version"
flows="$(bin/causeway lineage events --type research.finding.created --limit 1000 --json | node -e '
  let s=""; process.stdin.on("data", (d) => s += d).on("end", () => {
    const byVersion = {};
    for (const e of JSON.parse(s).events) if (e.version && !byVersion[e.version]) byVersion[e.version] = e.correlationid;
    process.stdout.write(["1.1.0", "1.0.0"].map((v) => byVersion[v] ?? "").join(" "));
  })')"
for flow in $flows; do cw lineage trace "$flow"; done
