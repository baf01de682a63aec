#!/usr/bin/env bash
# Starts a working signet-issuer and signet-agent on this machine (embedded SQLite, no other
# setup), registers the current user's processes (unix:uid), fetches an X509-SVID from the agent's
# SPIFFE Workload API socket, then a JWT-SVID, and has the agent validate it. Both keep running in the background; their state and logs
# live in $SIGNET_QUICKSTART_DIR (default /tmp/signet-quickstart). Run it again to restart them.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${SIGNET_QUICKSTART_DIR:-/tmp/signet-quickstart}
TD=${SIGNET_TRUST_DOMAIN:-example.org}

echo "==> building signet-issuer and signet-agent"
cargo build --quiet -p signet-issuer -p signet-agent
ISSUER=$PWD/target/debug/signet-issuer
AGENT=$PWD/target/debug/signet-agent

for p in agent issuer; do
    if [ -f "$DIR/$p.pid" ] && kill -0 "$(cat "$DIR/$p.pid")" 2>/dev/null; then
        echo "==> stopping the previous quickstart $p"
        kill "$(cat "$DIR/$p.pid")" || true
        for _ in $(seq 1 50); do kill -0 "$(cat "$DIR/$p.pid")" 2>/dev/null || break; sleep 0.1; done
    fi
done
rm -rf "$DIR"
mkdir -p "$DIR"
cat > "$DIR/issuer.toml" <<TOML
trust_domain = "$TD"
data_dir = "$DIR/issuer"
bind_address = "127.0.0.1:18081"
admin_socket_path = "$DIR/private/admin.sock"

[health]
bind_address = "127.0.0.1:18080"
TOML

echo "==> starting signet-issuer (log: $DIR/issuer.log)"
"$ISSUER" run --config "$DIR/issuer.toml" > "$DIR/issuer.log" 2>&1 &
echo $! > "$DIR/issuer.pid"
ADMIN=(--socket-path "$DIR/private/admin.sock")
for _ in $(seq 1 100); do
    "$ISSUER" healthcheck "${ADMIN[@]}" >/dev/null 2>&1 && break
    kill -0 "$(cat "$DIR/issuer.pid")" 2>/dev/null || { cat "$DIR/issuer.log"; exit 1; }
    sleep 0.1
done
"$ISSUER" healthcheck "${ADMIN[@]}"
"$ISSUER" bundle show "${ADMIN[@]}" --format pem > "$DIR/bundle.pem"

echo "==> join token for this node (alias spiffe://$TD/node/quickstart) and an entry for uid $(id -u)"
TOKEN=$("$ISSUER" token generate "${ADMIN[@]}" --spiffe-id "spiffe://$TD/node/quickstart" --ttl 10m --output json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
"$ISSUER" entry create "${ADMIN[@]}" --spiffe-id "spiffe://$TD/quickstart/workload" \
    --parent-id "spiffe://$TD/node/quickstart" --selector "unix:uid:$(id -u)" --x509-svid-ttl 10m >/dev/null

cat > "$DIR/agent.toml" <<TOML
trust_domain = "$TD"
issuer_address = "127.0.0.1:18081"
socket_path = "$DIR/agent/public/api.sock"
data_dir = "$DIR/agent/data"
trust_bundle_path = "$DIR/bundle.pem"

[node_attestor]
type = "join_token"

[health]
bind_address = "127.0.0.1:18088"
TOML

echo "==> starting signet-agent (log: $DIR/agent.log)"
"$AGENT" run --config "$DIR/agent.toml" --join-token "$TOKEN" > "$DIR/agent.log" 2>&1 &
echo $! > "$DIR/agent.pid"
export SPIFFE_ENDPOINT_SOCKET="unix://$DIR/agent/public/api.sock"
for _ in $(seq 1 100); do
    "$AGENT" api fetch x509 >/dev/null 2>&1 && break
    kill -0 "$(cat "$DIR/agent.pid")" 2>/dev/null || { cat "$DIR/agent.log"; exit 1; }
    sleep 0.1
done

echo "==> fetching an X509-SVID from the Workload API"
"$AGENT" api fetch x509 --write "$DIR/svid"
openssl verify -CAfile "$DIR/svid/bundle.0.pem" "$DIR/svid/svid.0.pem"

echo "==> fetching a JWT-SVID for the audience 'quickstart' and validating it through the agent"
JWT=$("$AGENT" api fetch jwt --audience quickstart | tail -n 1)
"$AGENT" api fetch jwt --audience quickstart | head -n 1
"$AGENT" api validate jwt --audience quickstart --token "$JWT"

cat <<MSG

signet-issuer (pid $(cat "$DIR/issuer.pid")) and signet-agent (pid $(cat "$DIR/agent.pid")) are running.
Point any SPIFFE client at the agent:

    export SPIFFE_ENDPOINT_SOCKET=$SPIFFE_ENDPOINT_SOCKET

Processes of uid $(id -u) receive spiffe://$TD/quickstart/workload. Try:
    $AGENT api watch                        # follow rotations (SVID TTL 10m)
    $AGENT api fetch jwt --audience my-api  # a JWT-SVID for an HTTP API
    $ISSUER entry show --socket-path $DIR/private/admin.sock
Stop: kill \$(cat $DIR/agent.pid) \$(cat $DIR/issuer.pid)
MSG
