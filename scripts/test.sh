#!/usr/bin/env bash
# `npm test`: set up, lint and typecheck, then every unit and integration test
# against real PostgreSQL, Redis, host agent and capsules.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
bash scripts/setup.sh
log "lint"
npm run --silent lint
log "tests"
export WRENN_TEST_DATABASE_URL="${WRENN_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export WRENN_TEST_REDIS_URL="${WRENN_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"
mkdir -p .wrenn
# Test files share host resources (ports, network namespaces): run them one file at a time.
node --test --test-concurrency=1 --test-timeout=600000 $(find packages -path '*/dist/test/*' -name '*.test.js' -not -path '*/node_modules/*' | sort) 2>&1 | tee .wrenn/test-output.log
