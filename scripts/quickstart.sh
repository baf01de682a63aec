#!/usr/bin/env bash
# Starts a working signet-issuer on this machine (embedded SQLite, no other setup), mints an
# X509-SVID through its admin CLI and shows it verifying against the issuer's trust bundle.
# The issuer keeps running in the background; its state lives in $SIGNET_QUICKSTART_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${SIGNET_QUICKSTART_DIR:-/tmp/signet-quickstart}
TD=${SIGNET_TRUST_DOMAIN:-example.org}

echo "==> building signet-issuer"
cargo build --quiet -p signet-issuer
BIN=$PWD/target/debug/signet-issuer

if [ -f "$DIR/issuer.pid" ] && kill -0 "$(cat "$DIR/issuer.pid")" 2>/dev/null; then
    echo "==> stopping the previous quickstart issuer"
    kill "$(cat "$DIR/issuer.pid")"; sleep 1
fi
mkdir -p "$DIR"
cat > "$DIR/issuer.toml" <<TOML
trust_domain = "$TD"
data_dir = "$DIR/data"
bind_address = "127.0.0.1:18081"
admin_socket_path = "$DIR/private/admin.sock"
log_level = "info"

[health]
bind_address = "127.0.0.1:18080"
TOML

echo "==> starting signet-issuer (logs: $DIR/issuer.log)"
"$BIN" run --config "$DIR/issuer.toml" > "$DIR/issuer.log" 2>&1 &
echo $! > "$DIR/issuer.pid"
ADMIN=(--socket-path "$DIR/private/admin.sock")
for _ in $(seq 1 100); do
    "$BIN" healthcheck "${ADMIN[@]}" >/dev/null 2>&1 && break
    kill -0 "$(cat "$DIR/issuer.pid")" 2>/dev/null || { cat "$DIR/issuer.log"; exit 1; }
    sleep 0.1
done
"$BIN" healthcheck "${ADMIN[@]}"

echo "==> minting an X509-SVID for spiffe://$TD/demo"
rm -rf "$DIR/svid"
"$BIN" x509 mint "${ADMIN[@]}" --spiffe-id "spiffe://$TD/demo" --ttl 1h --write "$DIR/svid"
openssl x509 -in "$DIR/svid/svid.pem" -noout -subject -ext subjectAltName -dates -serial
openssl verify -CAfile "$DIR/svid/bundle.pem" "$DIR/svid/svid.pem"

cat <<MSG

signet-issuer is running (pid $(cat "$DIR/issuer.pid")), admin socket $DIR/private/admin.sock.
Try:  $BIN entry create --socket-path $DIR/private/admin.sock --spiffe-id spiffe://$TD/web \\
          --parent-id spiffe://$TD/signet/agent/x --selector unix:uid:$(id -u)
      $BIN entry show --socket-path $DIR/private/admin.sock --output json
Stop: kill \$(cat $DIR/issuer.pid)
MSG
