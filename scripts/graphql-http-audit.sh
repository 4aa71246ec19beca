#!/usr/bin/env bash
# The graphql-http server audits (the GraphQL-over-HTTP spec's conformance suite) against
# the forum demo, on loopback only. Not part of CI: it needs node >= 18 and npm.
#   bash scripts/graphql-http-audit.sh
# Prints every audit's result for /graphql (cached) and /graphql/nocache, and exits non-zero
# if a MUST audit fails (SHOULD/MAY failures are printed as warnings).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v node >/dev/null || { echo "node not found" >&2; exit 1; }
command -v npm >/dev/null || { echo "npm not found" >&2; exit 1; }

PORT=${PORT:-18081}
GRAPHQL_HTTP_VERSION=${GRAPHQL_HTTP_VERSION:-1.23.1}
cargo build --release --example forum --quiet

WORK=$(mktemp -d)
SERVER=
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

(cd "$WORK" && npm install --no-audit --no-fund --silent "graphql-http@$GRAPHQL_HTTP_VERSION" >/dev/null)

ADDR=127.0.0.1:$PORT JWT_SECRET=audit-harness-secret-of-at-least-32-bytes \
  target/release/examples/forum >/dev/null 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -s "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done

cat >"$WORK/audit.mjs" <<'EOF'
import { serverAudits } from 'graphql-http';

const base = process.argv[2];
let mustFailed = 0;
for (const route of ['/graphql', '/graphql/nocache']) {
  const results = [];
  for (const { fn } of serverAudits({ url: base + route })) {
    results.push(await fn());
  }
  const ok = results.filter((r) => r.status === 'ok').length;
  console.log(`\n${route}: ${ok}/${results.length} audits pass`);
  for (const r of results) {
    const mark = r.status === 'ok' ? 'ok  ' : r.status.toUpperCase();
    console.log(`  ${mark} ${r.id} ${r.name}${r.status === 'ok' ? '' : `: ${r.reason}`}`);
    if (r.status !== 'ok' && r.name.startsWith('MUST')) mustFailed += 1;
  }
}
console.log(mustFailed === 0 ? '\nevery MUST audit passes' : `\n${mustFailed} MUST audit(s) failed`);
process.exit(mustFailed === 0 ? 0 : 1);
EOF
node "$WORK/audit.mjs" "http://127.0.0.1:$PORT"
