# Shared helpers for the set-up scripts. Sourced, not run.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '\033[1m[wrenn]\033[0m %s\n' "$*" >&2; }
die() { printf '[wrenn] error: %s\n' "$*" >&2; exit 1; }
