#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432 for the relay's PostgreSQL tests: starts the
# installed cluster, or installs Debian's package first. Tests connect as `postgres` without a
# password, so loopback connections are trusted (this is a test machine's database).
set -euo pipefail

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if command -v pg_isready >/dev/null && ready; then
    exit 0
fi
if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
fi
version="$(ls /etc/postgresql | sort -V | tail -n 1)"
hba="/etc/postgresql/${version}/main/pg_hba.conf"
if ! grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    sed -i '1i local all all trust' "$hba"
fi
# Start it, or (if the package's install already started it) make it read the edited pg_hba.
pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
for _ in $(seq 1 60); do
    if ready; then
        exit 0
    fi
    sleep 0.5
done
echo "PostgreSQL did not start on 127.0.0.1:5432" >&2
exit 1
