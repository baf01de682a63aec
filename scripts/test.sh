#!/usr/bin/env bash
# Runs the whole Signet test suite: unit, store (SQLite and PostgreSQL), end-to-end.
#
# It prepares what the tests need: a Python virtualenv (.venv) with the third-party clients and
# linters from tests/python/requirements.txt, and PostgreSQL at 127.0.0.1:5432 (started if installed
# but stopped). Without PostgreSQL the PostgreSQL suite is skipped and the skip is printed, unless
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

for s in "${skipped[@]}"; do echo "SKIPPING: $s"; done

# --- Build once, then run every test binary -----------------------------------------------
cargo build --workspace --bins --quiet
export SIGNET_TESTS_NO_BUILD=1
profile=default
[ "${CI:-}" = true ] && profile=ci
cargo nextest run --workspace --profile "$profile" "$@"

for s in "${skipped[@]}"; do echo "SKIPPED: $s"; done
