#!/usr/bin/env bash
# Runs Berth's whole test suite on this host: starts PostgreSQL (installing
# it from Debian's packages when missing) so that the persistence tests run on
# both SQLite and PostgreSQL, then `cargo test` over the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

BERTH_TEST_DATABASE_URL=$(scripts/postgres.sh)
export BERTH_TEST_DATABASE_URL
echo "PostgreSQL is up for the persistence tests" >&2

cargo test --workspace --locked --no-fail-fast "$@"
