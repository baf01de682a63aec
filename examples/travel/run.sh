#!/usr/bin/env bash
# The travel scenario of docs/delegation.md, end to end with real processes:
#
#   alice --ID token--> planner --hop--> search --presents--> flights API
#          (stand-in IdP)  (attested)     (attested)           (verifies, mTLS)
#
# It starts a signet-issuer (SQLite, delegation on, the stand-in IdP trusted) and a signet-agent
# (join token) in a temporary directory, registers the planner, search and flights workloads,
# starts the flights API, then plays each step and prints the decisions as `DECISION: ...` lines:
# one allowed call, the refusals (wrong presenter, tampered and widened copies, a right never
# granted, a chain too deep, a revoked token) and the auditor's trace. Everything is stopped and
# removed on exit (SIGNET_EXAMPLE_KEEP=1 keeps the directory, with the logs).
#
# SIGNET_BIN_DIR=<dir>: use the binaries already built there (signet-issuer, signet-agent,
# flights-api, travel-client, travel-forge, travel-idp) instead of running cargo build.
set -euo pipefail
umask 077

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/examples/travel
TD=example.org
IDP=https://idp.example.com
PLANNER=spiffe://$TD/planner
SEARCH=spiffe://$TD/search
FLIGHTS=spiffe://$TD/flights
SCRAPER=spiffe://$TD/scraper

if [ -n "${SIGNET_BIN_DIR:-}" ]; then
    BIN=$SIGNET_BIN_DIR
else
    echo "==> building signet-issuer, signet-agent and the example binaries"
    (cd "$ROOT" && cargo build --quiet -p signet-issuer -p signet-agent -p signet-examples)
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
fi
for b in signet-issuer signet-agent travel-idp flights-api travel-client travel-forge; do
    [ -x "$BIN/$b" ] || { echo "run.sh: $BIN/$b not found (build it, or fix SIGNET_BIN_DIR)" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/signet-travel.XXXXXX")
PIDS=()
cleanup() {
    local status=$?
    # Output may go to a closed pipe (run.sh | head): never let that stop the clean-up.
    trap '' PIPE
    set +e
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill "${PIDS[i]}" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ]; then
        for log in issuer.log agent.log flights.err; do
            [ -f "$WORK/$log" ] && { echo "--- last lines of $log" >&2; tail -n 15 "$WORK/$log" >&2; }
        done
    fi
    if [ -n "${SIGNET_EXAMPLE_KEEP:-}" ]; then
        echo "(kept $WORK)" || true
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
trap 'exit 141' PIPE

ISSUER=("$BIN/signet-issuer" --socket-path "$WORK/private/admin.sock")
AGENT=("$BIN/signet-agent")
export SPIFFE_ENDPOINT_SOCKET="unix://$WORK/agent/api.sock"

step() { printf '\n== %s\n   %s\n' "$1" "$2"; }
# The value of a JSON string member NAME on one line of JSON (the CLIs print single-line JSON).
field() { sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" | head -n 1; }
# A JSON document without its bearer token, for display.
without_token() { sed 's/"token":"[^"]*",//'; }
# Waits up to 30 s for COMMAND to succeed, while process PID lives.
wait_for() {
    local what=$1 pid=$2
    shift 2
    for _ in $(seq 1 300); do
        "$@" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || { echo "run.sh: $what exited" >&2; return 1; }
        sleep 0.1
    done
    echo "run.sh: timed out waiting for $what" >&2
    return 1
}
# Calls the flights API as SPIFFE_ID with a token file; prints the answer and the API's decision.
call() {
    local id=$1 method=$2 path=$3 token_file=$4
    echo "   \$ travel-client --spiffe-id $id --method $method --url https://$ADDR$path"
    "$BIN/travel-client" --spiffe-id "$id" --method "$method" --url "https://$ADDR$path" \
        --token-file "$token_file" > "$WORK/answer" 2>&1 || true
    sed 's/^/   | /' "$WORK/answer"
    # The flights API logs its decision (one line, never the token) before it answers.
    tail -n 1 "$WORK/flights.log"
}

echo "==> working directory $WORK"

# --- the stand-in identity provider ---------------------------------------------------------
"$BIN/travel-idp" init --dir "$WORK/idp" --issuer "$IDP" >/dev/null

# --- the issuer -----------------------------------------------------------------------------
mkdir -p "$WORK/private"
cat > "$WORK/issuer.toml" <<TOML
trust_domain = "$TD"
data_dir = "$WORK/issuer"
bind_address = "127.0.0.1:0"
admin_socket_path = "$WORK/private/admin.sock"
log_format = "json"

[health]
bind_address = "127.0.0.1:0"

# Delegation on: the policy files of examples/travel/policies (a copy of the travel policy).
[delegation]
policies_dir = "$HERE/policies"

# The company IdP whose ID tokens name the users (here the stand-in, its JWK Set as a file).
[[delegation.identity_providers]]
issuer = "$IDP"
audience = "signet"
jwks_path = "$WORK/idp/jwks.json"
TOML
echo "==> starting signet-issuer (SQLite in $WORK/issuer)"
"$BIN/signet-issuer" run --config "$WORK/issuer.toml" > "$WORK/issuer.log" 2>&1 &
PIDS+=($!)
wait_for "signet-issuer" "${PIDS[0]}" "${ISSUER[@]}" healthcheck
NODE_API=$(grep -m1 '"issuer ready"' "$WORK/issuer.log" | sed -n 's/.*"node_api":"\([^"]*\)".*/\1/p')
[ -n "$NODE_API" ] || { echo "run.sh: no node API address in the issuer's log" >&2; exit 1; }
"${ISSUER[@]}" bundle show --format pem > "$WORK/bundle.pem"

# --- the node agent and the workloads -------------------------------------------------------
NODE=spiffe://$TD/node/travel
JOIN=$("${ISSUER[@]}" token generate --spiffe-id "$NODE" --ttl 10m --output json | field token)
# Three workloads, all selected by the current uid so that one shell can play them all: each
# client picks its identity with --spiffe-id. In production each would be its own workload,
# told apart by uid, container or systemd unit (e.g. unix:uid:1001, systemd:unit:planner.service),
# and would have exactly one identity.
for id in "$PLANNER" "$SEARCH" "$FLIGHTS"; do
    "${ISSUER[@]}" entry create --spiffe-id "$id" --parent-id "$NODE" \
        --selector "unix:uid:$(id -u)" --x509-svid-ttl 10m >/dev/null
done
cat > "$WORK/agent.toml" <<TOML
trust_domain = "$TD"
issuer_address = "$NODE_API"
socket_path = "$WORK/agent/api.sock"
data_dir = "$WORK/agent/data"
trust_bundle_path = "$WORK/bundle.pem"
log_format = "json"

[node_attestor]
type = "join_token"

[health]
bind_address = "127.0.0.1:0"
TOML
echo "==> starting signet-agent (join token for $NODE)"
"${AGENT[@]}" run --config "$WORK/agent.toml" --join-token "$JOIN" > "$WORK/agent.log" 2>&1 &
PIDS+=($!)
has_all_ids() {
    local out
    out=$("${AGENT[@]}" api fetch x509 2>/dev/null) || return 1
    for id in "$PLANNER" "$SEARCH" "$FLIGHTS"; do
        grep -q "$id" <<<"$out" || return 1
    done
}
wait_for "signet-agent" "${PIDS[1]}" has_all_ids

# --- the flights API ------------------------------------------------------------------------
echo "==> starting flights-api as $FLIGHTS (mutual TLS, delegation keys from the agent, policy flights-api.datalog)"
"$BIN/flights-api" --listen 127.0.0.1:0 --spiffe-id "$FLIGHTS" --policy "$HERE/flights-api.datalog" \
    --address-file "$WORK/flights.addr" \
    > "$WORK/flights.log" 2> "$WORK/flights.err" &
PIDS+=($!)
wait_for "flights-api" "${PIDS[2]}" test -s "$WORK/flights.addr"
ADDR=$(cat "$WORK/flights.addr")

# --- the scenario ---------------------------------------------------------------------------
step "1. alice signs in" \
    "The company IdP ($IDP) gives alice an ID token for the client 'signet'."
"$BIN/travel-idp" id-token --dir "$WORK/idp" --sub alice --aud signet --email alice@example.com \
    > "$WORK/alice.jwt"
payload=$(cut -d. -f2 < "$WORK/alice.jwt" | tr '_-' '/+')
while [ $(( ${#payload} % 4 )) -ne 0 ]; do payload+="="; done
echo "   ID token: $(head -c 20 "$WORK/alice.jwt")... ($(tr -d '\n' < "$WORK/alice.jwt" | wc -c) bytes); claims:"
echo "   $(base64 -d <<<"$payload")"

step "2. the planner mints a delegation token for alice" \
    "The agent attests the caller as $PLANNER; the issuer checks alice's ID token and the policy."
echo "   \$ signet-agent api delegation mint --spiffe-id $PLANNER --id-token-file alice.jwt --right flights:read --ttl 10m --output json"
"${AGENT[@]}" api delegation mint --spiffe-id "$PLANNER" --id-token-file "$WORK/alice.jwt" \
    --right flights:read --ttl 10m --output json > "$WORK/planner.json"
field token < "$WORK/planner.json" > "$WORK/planner.tok"
PLANNER_TOKEN_ID=$(field token_id < "$WORK/planner.json")
echo "   $(without_token < "$WORK/planner.json")"

step "3. the planner hands the search part to the search agent" \
    "A hop: the issuer appends a block it signs, naming search as the next actor (flights:read)."
echo "   \$ signet-agent api delegation delegate --spiffe-id $PLANNER --token-file planner.tok --to $SEARCH --right flights:read --output json"
"${AGENT[@]}" api delegation delegate --spiffe-id "$PLANNER" --token-file "$WORK/planner.tok" \
    --to "$SEARCH" --right flights:read --output json > "$WORK/search.json"
field token < "$WORK/search.json" > "$WORK/search.tok"
SEARCH_TOKEN_ID=$(field token_id < "$WORK/search.json")
echo "   $(without_token < "$WORK/search.json")"

step "4. search calls the flights API" \
    "mTLS proves the presenter is $SEARCH, the token's last actor: allowed, for alice, flights:read only."
call "$SEARCH" GET /flights "$WORK/search.tok"

step "5. the planner presents search's token" \
    "A token is bound to its holder: the planner is in the chain, but not its last actor."
call "$PLANNER" GET /flights "$WORK/search.tok"

step "6. search presents a tampered copy" \
    "flights:read rewritten as flights:book inside the signed bytes: the issuer's signature breaks."
"$BIN/travel-forge" tamper --token-file "$WORK/search.tok" > "$WORK/tampered.tok"
call "$SEARCH" GET /flights "$WORK/tampered.tok"

step "7. search presents a widened copy to book a flight" \
    "An appended block claims right(\"flights:book\"); only the issuer's blocks are trusted."
"$BIN/travel-forge" widen --token-file "$WORK/search.tok" --right flights:book > "$WORK/widened.tok"
call "$SEARCH" POST /bookings "$WORK/widened.tok"

step "8. search tries to book with its own token" \
    "POST /bookings needs flights:book, which was never granted to search."
call "$SEARCH" POST /bookings "$WORK/search.tok"

step "9. search hands the token on to a scraper" \
    "The policy allows at most one hop after the planner: the issuer refuses the second hop."
echo "   \$ signet-agent api delegation delegate --spiffe-id $SEARCH --token-file search.tok --to $SCRAPER"
if "${AGENT[@]}" api delegation delegate --spiffe-id "$SEARCH" --token-file "$WORK/search.tok" \
    --to "$SCRAPER" > "$WORK/scraper.tok" 2> "$WORK/scraper.err"; then
    echo "DECISION: allowed $SEARCH -> $SCRAPER at the issuer (unexpected)"
else
    sed 's/^/   | /' "$WORK/scraper.err"
    # "api delegation delegate: refused (PermissionDenied): <the issuer's reason>"
    reason=$(head -n 1 "$WORK/scraper.err" | sed 's/^api delegation delegate: refused //')
    if grep -qiE 'depth|deep|allows [0-9]+ hop' "$WORK/scraper.err"; then code=too_deep; else code=issuer; fi
    echo "DECISION: refused ($code) hop $SEARCH -> $SCRAPER, at the issuer $reason"
fi

step "10. the planner's token is revoked" \
    "Revoking it revokes every token derived from it; the agent streams the list to the flights API."
echo "   \$ signet-issuer delegation revoke --token-id $PLANNER_TOKEN_ID --reason 'planner compromised'"
"${ISSUER[@]}" delegation revoke --token-id "$PLANNER_TOKEN_ID" --reason "planner compromised" | sed 's/^/   | /'
start=$(date +%s)
for _ in $(seq 1 60); do
    "$BIN/travel-client" --spiffe-id "$SEARCH" --url "https://$ADDR/flights" \
        --token-file "$WORK/search.tok" > "$WORK/answer" 2>&1 || true
    grep -q '"error": "revoked"' "$WORK/answer" && break
    sleep 0.25
done
echo "   search calls again (refused as revoked after $(( $(date +%s) - start )) s):"
call "$SEARCH" GET /flights "$WORK/search.tok"

step "11. the auditor asks: who acted for alice on this request?" \
    "The audit log rebuilds the chain of search's token: the subject, each hop, who authorized it and when."
echo "   \$ signet-issuer audit trace --token-id $SEARCH_TOKEN_ID"
"${ISSUER[@]}" audit trace --token-id "$SEARCH_TOKEN_ID" | sed 's/^/   | /'

printf '\nDone: 1 call allowed, 6 refused, and the chain traced. Logs: %s (SIGNET_EXAMPLE_KEEP=1 keeps them).\n' "$WORK"
