#!/usr/bin/env bash
# `npm run bench`: every benchmark, each printing its figures (docs/benchmarks.md records them).
# Run as root after `npm run build` (or `npm test`, which builds); takes several minutes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
for b in cp-bench envd-startup envd-throughput agent-bench capsule-bench snapshot-bench; do
  log "bench/$b.mjs"
  node "bench/$b.mjs"
done
