#!/usr/bin/env bash
# Runs Berth's whole test suite on this host:
# - starts PostgreSQL (installing it from Debian's packages when missing) so
#   that the persistence tests run on both SQLite and PostgreSQL;
# - installs debootstrap when missing and makes the runtime base images
#   (`berth images bootstrap`), which the Docker tests build apps on;
# - installs the sandboxes' language toolchains when missing
#   (scripts/toolchains.sh);
# - runs `cargo test` over the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

BERTH_TEST_DATABASE_URL=$(scripts/postgres.sh)
export BERTH_TEST_DATABASE_URL
echo "PostgreSQL is up for the persistence tests" >&2

if ! command -v debootstrap >/dev/null; then
  echo "installing debootstrap from Debian's packages" >&2
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
fi
scripts/toolchains.sh
cargo build --locked --bin berth
target/debug/berth images bootstrap

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?

# One closing line over all test binaries (cargo prints one per binary).
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
exit "$status"
