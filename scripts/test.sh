#!/usr/bin/env bash
# Runs the whole Signet test suite: unit, store (SQLite and PostgreSQL), end-to-end.
#
# It prepares what the tests need: a Python virtualenv (.venv) with the third-party clients and
# linters from tests/python/requirements.txt, PostgreSQL at 127.0.0.1:5432 and NATS with JetStream
# at 127.0.0.1:4222 (each started if installed but stopped). Without PostgreSQL the PostgreSQL suite
# is skipped, without NATS the audit stream tests, and the skips are printed, unless
# SIGNET_REQUIRE_SERVICES=1 (as in CI), where a missing service is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
require=${SIGNET_REQUIRE_SERVICES:-0}
skipped=()

# --- Python clients -------------------------------------------------------------------------
if [ ! -f .venv/.installed ] || ! cmp -s tests/python/requirements.txt .venv/.installed; then
    echo "==> creating .venv with tests/python/requirements.txt"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
    cp tests/python/requirements.txt .venv/.installed
fi
export SIGNET_VENV="$ROOT/.venv"

# --- PostgreSQL -----------------------------------------------------------------------------
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
if ! pg_up && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "==> starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if pg_up; then
    export SIGNET_TEST_POSTGRES_URL=${SIGNET_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
    echo "==> PostgreSQL suite: $SIGNET_TEST_POSTGRES_URL"
elif [ "$require" = 1 ]; then
    echo "error: PostgreSQL is not reachable at 127.0.0.1:5432 and SIGNET_REQUIRE_SERVICES=1" >&2
    exit 1
else
    unset SIGNET_TEST_POSTGRES_URL
    skipped+=("PostgreSQL store suite and PostgreSQL end-to-end tests (no server at 127.0.0.1:5432)")
fi

# --- NATS with JetStream (the audit stream) -------------------------------------------------
# The machine image has no nats-server: install Debian's package (as root) when it is missing.
nats_up() { (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; }
if ! nats_up && [ ! -x /usr/sbin/nats-server ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing nats-server"
    (apt-get install -y -q nats-server >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q nats-server >/dev/null 2>&1; }) || true
fi
if ! nats_up && [ -x /usr/sbin/nats-server ]; then
    echo "==> starting nats-server with JetStream"
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || true
    for _ in $(seq 1 30); do nats_up && break; sleep 1; done
fi
if nats_up; then
    export SIGNET_TEST_NATS_URL=${SIGNET_TEST_NATS_URL:-nats://127.0.0.1:4222}
    echo "==> NATS JetStream tests: $SIGNET_TEST_NATS_URL"
elif [ "$require" = 1 ]; then
    echo "error: NATS is not reachable at 127.0.0.1:4222 and SIGNET_REQUIRE_SERVICES=1" >&2
    exit 1
else
    unset SIGNET_TEST_NATS_URL
    skipped+=("NATS JetStream audit stream tests (no server at 127.0.0.1:4222)")
fi

for s in "${skipped[@]}"; do echo "SKIPPING: $s"; done

# --- Build once, then run every test binary -----------------------------------------------
cargo build --workspace --bins --quiet
export SIGNET_TESTS_NO_BUILD=1
profile=default
[ "${CI:-}" = true ] && profile=ci
cargo nextest run --workspace --profile "$profile" "$@"

for s in "${skipped[@]}"; do echo "SKIPPED: $s"; done
