#!/usr/bin/env bash
# Load harness: the forum demo under wrk, on loopback only, bounded in time.
#   bash scripts/load.sh            (needs `wrk`: apt-get install wrk)
# Prints requests/second for a cached HIT (anonymous and with a verified HS256 token) and
# for the same query on the uncached route.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }

PORT=${PORT:-18080}
DURATION=${DURATION:-10s}
cargo build --release --example forum --quiet
BIN=target/release/examples/forum
export JWT_SECRET=${JWT_SECRET:-load-harness-secret-of-at-least-32-bytes}
TOKEN=$($BIN token alice Alice member 2>/dev/null)
ADDR=127.0.0.1:$PORT $BIN >/dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
for _ in $(seq 50); do curl -s "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done

LUA=$(mktemp --suffix .lua)
run() { # name path query [token]
  local auth=()
  {
    echo 'wrk.method = "POST"'
    echo "wrk.body = '{\"query\":\"$3\"}'"
    echo 'wrk.headers["Content-Type"] = "application/json"'
    if [ -n "${4:-}" ]; then echo "wrk.headers[\"Authorization\"] = \"Bearer $4\""; auth=(-H "authorization: Bearer $4"); fi
  } >"$LUA"
  # Warm the entry, so the run measures hits.
  curl -s -o /dev/null -X POST "http://127.0.0.1:$PORT$2" -H 'content-type: application/json' "${auth[@]}" -d "{\"query\":\"$3\"}"
  printf '%-28s ' "$1"
  wrk -t1 -c16 -d"$DURATION" -s "$LUA" "http://127.0.0.1:$PORT$2" | awk '/Requests\/sec/ {print $2 " req/s"}'
}
FEED='{ publicPosts(limit: 5) { id title author } }'
run "hit, anonymous" /graphql "$FEED"
run "hit, HS256 token" /graphql "$FEED" "$TOKEN"
run "hit, HS256, scoped me" /graphql '{ me { id name role } }' "$TOKEN"
run "uncached, HS256 token" /graphql/nocache "$FEED" "$TOKEN"
