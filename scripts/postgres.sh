#!/usr/bin/env bash
# Makes sure a local PostgreSQL from Debian's packages is installed and
# running, with a `berth` role that may create databases. Prints the admin
# URL that tests use (BERTH_TEST_DATABASE_URL) on stdout.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "installing postgresql from Debian's packages" >&2
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi

version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$version main$"; then
  as_root pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -q online; then
  as_root pg_ctlcluster "$version" main start >&2
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')

for _ in $(seq 1 50); do
  if as_root runuser -u postgres -- pg_isready -q -p "$port"; then break; fi
  sleep 0.2
done

as_root runuser -u postgres -- psql -q -p "$port" -v ON_ERROR_STOP=1 >&2 <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'berth') THEN
    CREATE ROLE berth LOGIN CREATEDB PASSWORD 'berth';
  END IF;
END
$$;
SQL
# Databases left by earlier test runs.
for db in $(as_root runuser -u postgres -- psql -At -p "$port" -c "SELECT datname FROM pg_database WHERE datname LIKE 'berth_test_%'"); do
  as_root runuser -u postgres -- dropdb -p "$port" --if-exists --force "$db" >&2 || true
done

echo "postgres://berth:berth@127.0.0.1:$port/postgres"
