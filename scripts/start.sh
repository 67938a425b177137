#!/usr/bin/env bash
# `npm start`: set up, then run the whole platform on this machine.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
bash scripts/setup.sh
exec node scripts/start.mjs
