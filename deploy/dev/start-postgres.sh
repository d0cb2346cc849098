#!/usr/bin/env bash
# Start Debian's PostgreSQL on loopback and make a test database; print its SQLAlchemy URL.
# Idempotent: safe to run when it is already up.
set -euo pipefail
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | grep -q "^$ver main"; then
  pg_createcluster "$ver" main >/dev/null 2>&1
fi
# Loopback only.
sed -i "s/^#\?listen_addresses.*/listen_addresses = '127.0.0.1'/" "/etc/postgresql/$ver/main/postgresql.conf"
pg_ctlcluster "$ver" main start >/dev/null 2>&1 || true
port=$(pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $3}')
for _ in $(seq 1 30); do
  su postgres -c "pg_isready -q -h 127.0.0.1 -p $port" && break
  sleep 1
done
su postgres -c "psql -q -p $port -tc \"SELECT 1 FROM pg_roles WHERE rolname='safehub'\"" | grep -q 1 \
  || su postgres -c "psql -q -p $port -c \"CREATE ROLE safehub LOGIN SUPERUSER PASSWORD 'safehub'\""
su postgres -c "psql -q -p $port -tc \"SELECT 1 FROM pg_database WHERE datname='safehub_test'\"" | grep -q 1 \
  || su postgres -c "psql -q -p $port -c 'CREATE DATABASE safehub_test OWNER safehub'"
echo "postgresql+psycopg2://safehub:safehub@127.0.0.1:$port/safehub_test"
