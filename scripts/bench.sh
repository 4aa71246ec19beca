#!/usr/bin/env bash
# The load harness: one command reproduces the table in BENCHMARKS.md.
#
#   bash scripts/bench.sh                 # ROUNDS=3 DURATION=4s CONNECTIONS=32 USERS=10000
#   BIN=/tmp/loadbench-before bash scripts/bench.sh    # a binary built earlier, not rebuilt
#   ONLY="a c" ROUNDS=5 bash scripts/bench.sh            # some rows only
#
# The server (examples/loadbench: the forum behind the layer, a bare handler returning the
# exact bytes of the member HIT, and an instance whose memory never holds a Redis entry)
# runs pinned to one core, wrk to another (SERVER_CPU=0, LOAD_CPU=1). Rows alternate within
# each round; the table gives each row's median req/s, p50 and p99 over the rounds, and its
# ratio to the bare handler (a). Installs wrk and redis-server from the distribution when
# missing; without redis-server, row (g) is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4s}
CONNECTIONS=${CONNECTIONS:-32}
USERS=${USERS:-10000}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

need() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing $2 ..." >&2
  $sudo apt-get install -y -qq "$2" >/dev/null 2>&1 \
    || { $sudo apt-get update -qq >/dev/null 2>&1 && $sudo apt-get install -y -qq "$2" >/dev/null 2>&1; } \
    || return 1
}
need wrk wrk || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
need taskset util-linux || { echo "taskset is required (util-linux)" >&2; exit 1; }
HAVE_REDIS=1
need redis-server redis-server || HAVE_REDIS=0

# BIN=path compares another build (say, the one before a change) without building.
if [ -z "${BIN:-}" ]; then
  cargo build --release --example loadbench --quiet
  BIN=$PWD/target/release/examples/loadbench
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

openssl genrsa -out "$WORK/rs.pem" 2048 2>/dev/null
openssl rsa -in "$WORK/rs.pem" -pubout -out "$WORK/rs.pub.pem" 2>/dev/null
export JWT_SECRET=load-harness-secret-of-at-least-32-bytes
export RS256_PRIVATE_PEM=$WORK/rs.pem RS256_PUBLIC_PEM=$WORK/rs.pub.pem
PORT=$(free_port)
L2_PORT=$(free_port)
if [ "$HAVE_REDIS" = 1 ]; then
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
  PIDS+=($!)
  wait_port "$REDIS_PORT"
  export REDIS_URL=redis://127.0.0.1:$REDIS_PORT L2_ADDR=127.0.0.1:$L2_PORT
fi
ADDR=127.0.0.1:$PORT RUST_LOG=warn taskset -c "$SERVER_CPU" "$BIN" serve >"$WORK/server.log" 2>&1 &
PIDS+=($!)
wait_port "$PORT" || { cat "$WORK/server.log" >&2; exit 1; }
if [ "$HAVE_REDIS" = 1 ]; then wait_port "$L2_PORT"; fi

"$BIN" tokens "$USERS" >"$WORK/users.txt"
MEMBER=$("$BIN" member-token)
RS256=$("$BIN" rs256-token)
MEMBER_POSTS='{"query":"{ memberPosts { id title body author } }"}'
PUBLIC_POSTS='{"query":"{ publicPosts { id title body author } }"}'
ME='{"query":"{ me { id name role } }"}'

# One wrk script per row: a POST with the body and, if any, a token.
script() { # file body token
  {
    echo 'wrk.method = "POST"'
    echo "wrk.body = '$2'"
    echo 'wrk.headers["Content-Type"] = "application/json"'
    if [ -n "$3" ]; then echo "wrk.headers[\"Authorization\"] = \"Bearer $3\""; fi
  } >"$1"
}
# Row (e): each request the next of USERS tokens (10,000 buckets of `me`).
cat >"$WORK/users.lua" <<LUA
wrk.method = "POST"
wrk.body = '$ME'
wrk.headers["Content-Type"] = "application/json"
local tokens = {}
for line in io.lines("$WORK/users.txt") do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i % #tokens + 1
  wrk.headers["Authorization"] = "Bearer " .. tokens[i]
  return wrk.format()
end
LUA

BASE=http://127.0.0.1:$PORT
# ONLY="a c" runs those rows alone (a focused before/after); default: all.
read -ra ROWS <<<"${ONLY:-a b c d e f}"
declare -A NAME URL LUA
# The same request as (b), token included: only the work behind it differs.
NAME[a]="bare axum handler, same bytes"; URL[a]=$BASE/bare; script "$WORK/a.lua" "$MEMBER_POSTS" "$MEMBER"
NAME[b]="HIT, HS256 member, memberPosts"; URL[b]=$BASE/graphql; script "$WORK/b.lua" "$MEMBER_POSTS" "$MEMBER"
NAME[c]="HIT, RS256 (verified-token cache)"; URL[c]=$BASE/graphql; script "$WORK/c.lua" "$MEMBER_POSTS" "$RS256"
NAME[d]="HIT, anonymous publicPosts"; URL[d]=$BASE/graphql; script "$WORK/d.lua" "$PUBLIC_POSTS" ""
NAME[e]="HIT, me, $USERS users"; URL[e]=$BASE/graphql; cp "$WORK/users.lua" "$WORK/e.lua"
NAME[f]="uncached (verify-only route)"; URL[f]=$BASE/graphql/nocache; script "$WORK/f.lua" "$MEMBER_POSTS" "$MEMBER"
if [ "$HAVE_REDIS" = 1 ] && [[ -z "${ONLY:-}" || " $ONLY " == *" g "* ]]; then
  [[ " ${ROWS[*]} " == *" g "* ]] || ROWS+=(g)
  NAME[g]="L2 (Redis) hit, empty L1"; URL[g]=http://127.0.0.1:$L2_PORT/graphql; script "$WORK/g.lua" "$MEMBER_POSTS" "$MEMBER"
fi

load() { # row seconds
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$2" --latency -s "$WORK/$1.lua" "${URL[$1]}"
}
# wrk prints latencies as 412.00us / 1.20ms / 1.01s: in microseconds.
micros() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'; }

echo "warming up (each row's entries stored, $USERS users' buckets filled) ..." >&2
for row in "${ROWS[@]}"; do load "$row" 2s >/dev/null; done
for row in b c d e f g; do
  [[ " ${ROWS[*]} " == *" $row "* ]] || continue
  body=$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$WORK/$row.lua")
  token=$(sed -n 's/^wrk.headers\["Authorization"\] = "Bearer \(.*\)"$/\1/p' "$WORK/$row.lua")
  if [ "$row" = e ]; then token=$(head -1 "$WORK/users.txt"); fi
  # Headers as wrk sends them (no Accept, no User-Agent: both would be another key).
  headers=$(curl -s -o /dev/null -D - -X POST "${URL[$row]}" -H 'Accept:' -H 'User-Agent:' -H 'Content-Type: application/json' \
    ${token:+-H "authorization: Bearer $token"} -d "$body" | tr -d '\r' | grep -i '^x-cache' | tr '\n' ' ')
  echo "($row) ${NAME[$row]}: $headers" >&2
  # A row that does not measure what it says is worse than none.
  case $row in
    b | c | d | e) want="x-cache: HIT" ;;
    f) want="x-cache: BYPASS" ;;
    g) want="x-cache-tier: redis" ;;
  esac
  [[ "$headers" == *"$want"* ]] || { echo "($row) expected '$want'" >&2; exit 1; }
done

: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
  echo "round $round of $ROUNDS ..." >&2
  for row in "${ROWS[@]}"; do
    out=$(load "$row" "$DURATION")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p50=$(micros "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(micros "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errors=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    if [ -n "$errors" ]; then echo "($row) non-2xx answers: $errors" >&2; fi
    echo "$row $rps $p50 $p99" >>"$WORK/results"
    echo "  ($row) $rps req/s" >&2
  done
done

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
BARE=$(awk '$1 == "a" {print $2}' "$WORK/results" | median)
echo
echo "| row | path | req/s (median of $ROUNDS) | p50 | p99 | × (a) |"
echo "| --- | --- | --- | --- | --- | --- |"
for row in "${ROWS[@]}"; do
  rps=$(awk -v r="$row" '$1 == r {print $2}' "$WORK/results" | median)
  p50=$(awk -v r="$row" '$1 == r {print $3}' "$WORK/results" | median)
  p99=$(awk -v r="$row" '$1 == r {print $4}' "$WORK/results" | median)
  awk -v row="$row" -v name="${NAME[$row]}" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v bare="$BARE" \
    'BEGIN { printf "| (%s) | %s | %.0f | %.0f µs | %.0f µs | %.2f |\n", row, name, rps, p50, p99, rps / bare }'
done
echo
echo "server on CPU $SERVER_CPU, wrk -t1 -c$CONNECTIONS on CPU $LOAD_CPU, $DURATION per run, $(nproc) CPUs, $(uname -r)"
