#!/usr/bin/env bash
# Installs what the database layer's tests run for real: Debian's MariaDB server and client (a private mariadbd per
# test session, never the system service) and sqitch with its PostgreSQL, SQLite and MariaDB drivers. PostgreSQL 15
# usually comes with the machine (installed here when missing; the tests start a private cluster). Alembic comes from
# requirements-dev.txt.
# Quick and silent when everything is present; needs root to install; `apt-get update` only when an install needs it.
set -euo pipefail

packages=(postgresql-15 mariadb-server mariadb-client sqitch libdbd-pg-perl libdbd-sqlite3-perl libdbd-mariadb-perl sqlite3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "db-prereqs: missing Debian packages ${missing[*]}; run this script as root" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "==> Installing ${missing[*]} for the database layer tests"
# policy-rc.d 101: the packages' own service is not started (the tests run private servers)
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; own_policy=1; fi
install() { apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
rc=0
if ! install 2>/dev/null; then
  apt-get update -q >/dev/null
  install || rc=$?
fi
if [ "$own_policy" -eq 1 ]; then rm -f "$policy"; fi
[ "$rc" -eq 0 ] || { echo "db-prereqs: apt-get install failed (rc $rc)" >&2; exit "$rc"; }
