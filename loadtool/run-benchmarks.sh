#!/usr/bin/env bash
# Runs the agent benchmarks of docs/agent.md on this machine: starts signet-issuer and signet-agent
# in a temporary directory (loopback and Unix sockets only), registers this user's processes
# (unix:uid), and runs signet-loadtool fetch-x509 (1, 100, 1000 clients), jwt (cached, mint,
# validate), delegation (mint, delegate), entry-latency and rss.
#
#   loadtool/run-benchmarks.sh [PROFILE_DIR]     # default target/debug; build first:
#   cargo build -p signet-issuer -p signet-agent -p signet-loadtool
#
# Environment: RSS_ENTRIES (default 10000), REQUESTS (default 2000 per client at 1 client, a tenth
# of that at 100 clients, a hundredth at 1000), ONLY=rss|fetch|jwt|delegation|entry (one benchmark). Variables
# such as MALLOC_ARENA_MAX are passed on to the agent.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug}
ISSUER=$BIN/signet-issuer
AGENT=$BIN/signet-agent
LOAD=$BIN/signet-loadtool
for b in "$ISSUER" "$AGENT" "$LOAD"; do
    [ -x "$b" ] || { echo "missing $b: cargo build -p signet-issuer -p signet-agent -p signet-loadtool" >&2; exit 1; }
done
RSS_ENTRIES=${RSS_ENTRIES:-10000}
REQUESTS=${REQUESTS:-2000}
ONLY=${ONLY:-}
want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

DIR=$(mktemp -d /tmp/signet-bench-XXXXXX)
ISSUER_PID=
AGENT_PID=
cleanup() {
    [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null || true
    [ -n "$ISSUER_PID" ] && kill "$ISSUER_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NODE_PORT=$(port)
AGENT_HEALTH_PORT=$(port)
mkdir -p "$DIR/policies"
# The bench workload acts for itself and may hand its token to bench/worker.
cat > "$DIR/policies/bench.datalog" <<'EOF'
grant("bench:read") <- operation("mint"), actor("spiffe://example.org/bench/workload");
grant("bench:read") <- operation("delegate"), next_actor("spiffe://example.org/bench/worker");
max_ttl(300);
max_depth(1);
allow if operation("mint"), actor("spiffe://example.org/bench/workload"), subject("spiffe://example.org/bench/workload");
allow if operation("delegate"), next_actor("spiffe://example.org/bench/worker");
deny if true;
EOF
cat > "$DIR/issuer.toml" <<EOF
trust_domain = "example.org"
bind_address = "127.0.0.1:$NODE_PORT"
admin_socket_path = "$DIR/private/admin.sock"
data_dir = "$DIR/issuer"
log_level = "warn"
[health]
bind_address = "127.0.0.1:0"
[delegation]
policies_dir = "$DIR/policies"
EOF
cat > "$DIR/agent.toml" <<EOF
trust_domain = "example.org"
issuer_address = "127.0.0.1:$NODE_PORT"
socket_path = "$DIR/public/api.sock"
data_dir = "$DIR/agent"
insecure_bootstrap = true
log_level = "warn"
[node_attestor]
type = "join_token"
[health]
bind_address = "127.0.0.1:$AGENT_HEALTH_PORT"
EOF

"$ISSUER" run --config "$DIR/issuer.toml" 2>"$DIR/issuer.log" &
ISSUER_PID=$!
ADMIN=(--socket-path "$DIR/private/admin.sock")
for _ in $(seq 1 100); do "$ISSUER" "${ADMIN[@]}" healthcheck >/dev/null 2>&1 && break; sleep 0.2; done
TOKEN_JSON=$("$ISSUER" "${ADMIN[@]}" token generate --output json)
TOKEN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<<"$TOKEN_JSON")
AGENT_ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["agent_spiffe_id"])' <<<"$TOKEN_JSON")
"$AGENT" run --config "$DIR/agent.toml" --join-token "$TOKEN" 2>"$DIR/agent.log" &
AGENT_PID=$!
SOCK="$DIR/public/api.sock"
for _ in $(seq 1 100); do [ -S "$SOCK" ] && "$AGENT" healthcheck --socket-path "$SOCK" >/dev/null 2>&1 && break; sleep 0.2; done
"$ISSUER" "${ADMIN[@]}" entry create --spiffe-id spiffe://example.org/bench/workload \
    --parent-id "$AGENT_ID" --selector "unix:uid:$(id -u)" >/dev/null
for _ in $(seq 1 100); do "$AGENT" api fetch x509 --socket-path "$SOCK" >/dev/null 2>&1 && break; sleep 0.1; done

# Memory first, on a fresh agent (later benchmarks grow its heap with connection buffers).
if want rss; then
echo "== agent memory per cached SVID"
"$LOAD" rss --socket "$SOCK" --admin-socket "$DIR/private/admin.sock" --health "127.0.0.1:$AGENT_HEALTH_PORT" \
    --agent-pid "$AGENT_PID" --parent-id "$AGENT_ID" --entries "$RSS_ENTRIES"
fi
if want fetch; then
echo "== FetchX509SVID first-answer latency"
# Back to back (closed loop: with many clients this measures saturation) ...
"$LOAD" fetch-x509 --socket "$SOCK" --clients 1 --requests "$REQUESTS"
"$LOAD" fetch-x509 --socket "$SOCK" --clients 100 --requests "$((REQUESTS / 10))"
"$LOAD" fetch-x509 --socket "$SOCK" --clients 1000 --requests "$((REQUESTS / 100 > 0 ? REQUESTS / 100 : 1))"
# ... and paced, about 1,000 requests/s in all, spread over 100 or 1,000 connected clients.
"$LOAD" fetch-x509 --socket "$SOCK" --clients 100 --requests "$((REQUESTS / 100 > 0 ? REQUESTS / 100 : 1))" --pause-ms 100
"$LOAD" fetch-x509 --socket "$SOCK" --clients 1000 --requests "$((REQUESTS / 200 > 0 ? REQUESTS / 200 : 1))" --pause-ms 1000
fi
if want jwt; then
echo "== JWT-SVIDs through the Workload API"
"$LOAD" jwt --mode cached --socket "$SOCK" --clients 1 --requests "$REQUESTS"
"$LOAD" jwt --mode cached --socket "$SOCK" --clients 100 --requests "$((REQUESTS / 10))"
"$LOAD" jwt --mode mint --socket "$SOCK" --clients 1 --requests "$((REQUESTS / 2))"
"$LOAD" jwt --mode mint --socket "$SOCK" --clients 100 --requests "$((REQUESTS / 20 > 0 ? REQUESTS / 20 : 1))"
"$LOAD" jwt --mode validate --socket "$SOCK" --clients 1 --requests "$REQUESTS"
"$LOAD" jwt --mode validate --socket "$SOCK" --clients 100 --requests "$((REQUESTS / 10))"
fi
if want delegation; then
echo "== delegation through the agent's delegation service"
"$LOAD" delegation --mode mint --socket "$SOCK" --clients 1 --requests "$((REQUESTS / 2))"
"$LOAD" delegation --mode mint --socket "$SOCK" --clients 100 --requests "$((REQUESTS / 20 > 0 ? REQUESTS / 20 : 1))"
"$LOAD" delegation --mode delegate --socket "$SOCK" --clients 1 --requests "$((REQUESTS / 2))"
"$LOAD" delegation --mode delegate --socket "$SOCK" --clients 100 --requests "$((REQUESTS / 20 > 0 ? REQUESTS / 20 : 1))"
fi
if want entry; then
echo "== new entry -> waiting stream"
"$LOAD" entry-latency --socket "$SOCK" --admin-socket "$DIR/private/admin.sock" --parent-id "$AGENT_ID" --samples 30
fi
