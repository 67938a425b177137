#!/usr/bin/env bash
# Everything `npm start` and `npm test` need on a fresh Debian bookworm machine,
# run as root: system packages, PostgreSQL and Redis running, npm dependencies,
# the build, and the `minimal` template. Idempotent and quick when done before.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

[ "$(id -u)" = 0 ] || die "run as root: capsules need namespaces, cgroups, mounts and iptables"

# System packages from Debian only.
APT_PKGS=(runc debootstrap tini iptables iproute2 e2fsprogs procps util-linux)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# PostgreSQL and Redis: the machine starts them; start them when they are not running.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  if command -v redis-server >/dev/null; then
    log "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  fi
fi

# npm dependencies: only when the lockfile changed since the last install.
stamp=node_modules/.wrenn-lock-hash
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

log "building"
npm run --silent build

if [ -f packages/host-agent/dist/src/template/build-minimal.js ]; then
  node packages/host-agent/dist/src/template/build-minimal.js
fi
