#!/usr/bin/env bash
# Installs what the database layer's tests run for real: Debian's MariaDB server and client (a private mariadbd per
# test session, never the system service) and sqitch with its PostgreSQL, SQLite and MariaDB drivers. PostgreSQL 15
# usually comes with the machine (installed here when missing; the tests start a private cluster). Alembic comes from
# requirements-dev.txt.
# Quick and silent when everything is present; needs root to install (scripts/apt-prereqs.sh, which never starts the
# packages' own services: the tests run private servers).
set -euo pipefail

packages=(postgresql-15 mariadb-server mariadb-client sqitch libdbd-pg-perl libdbd-sqlite3-perl libdbd-mariadb-perl sqlite3)
bash "$(dirname "${BASH_SOURCE[0]}")/apt-prereqs.sh" --for "the database layer tests" "${packages[@]}"
