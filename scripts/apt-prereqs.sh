#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are not installed yet: the apt part of every
# scripts/*-prereqs.sh. Quick and silent when all are present (one dpkg-query, no root needed). An install needs root;
# it waits for another apt or dpkg run's lock (at most FAILSAFE_APT_LOCK_TIMEOUT seconds, default 600), runs
# `apt-get update` only when the install fails without it, and never starts a service: /usr/sbin/policy-rc.d answers
# 101 during the install and the machine's own one (or none) is put back after.
# Usage: apt-prereqs.sh [--for WHAT] PKG...    (WHAT, e.g. "the test fleet", is named in the messages)
set -euo pipefail

purpose=
if [ "${1:-}" = --for ]; then
  [ "$#" -ge 2 ] || { echo "usage: apt-prereqs.sh [--for WHAT] PKG..." >&2; exit 2; }
  purpose=" for $2"
  shift 2
fi
[ "$#" -gt 0 ] || { echo "usage: apt-prereqs.sh [--for WHAT] PKG..." >&2; exit 2; }
lock_timeout=${FAILSAFE_APT_LOCK_TIMEOUT:-600}

# The named packages that dpkg does not have installed, each once, in the order given (a name dpkg has never heard
# of is missing too: dpkg-query then fails for it, hence the `|| true`).
missing_packages() {
  local -A installed=() seen=()
  local pkg status
  while read -r pkg status; do
    [ "$status" = installed ] && installed[${pkg%%:*}]=1
  done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$@" 2>/dev/null || true)
  for pkg in "$@"; do
    [ -n "${installed[$pkg]:-}" ] || [ -n "${seen[$pkg]:-}" ] || { seen[$pkg]=1; echo "$pkg"; }
  done
}

mapfile -t missing < <(missing_packages "$@")
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "apt-prereqs: missing Debian packages ${missing[*]}$purpose; installing them needs root" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "==> Installing ${missing[*]}$purpose"

# policy-rc.d 101: the packages' maintainer scripts start no service (the tests run private servers, and nothing
# here runs an init system). Swapped in with a rename, the machine's own one kept beside it and renamed back at exit.
policy=/usr/sbin/policy-rc.d
saved=
ours=$(mktemp "$policy.failsafe.XXXXXX")
restore_policy() {
  if [ -n "$saved" ]; then mv -f "$saved" "$policy"; else rm -f "$policy"; fi
  rm -f "$ours"
}
if [ -e "$policy" ] || [ -L "$policy" ]; then
  saved=$(mktemp "$policy.saved.XXXXXX")
  cp -a "$policy" "$saved"
fi
trap restore_policy EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
printf '#!/bin/sh\nexit 101\n' > "$ours"
chmod 0755 "$ours"
mv -f "$ours" "$policy"

apt=(apt-get -q -o "DPkg::Lock::Timeout=$lock_timeout")
install() { "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null; }
if ! install 2>/dev/null; then
  "${apt[@]}" update >/dev/null || { rc=$?; echo "apt-prereqs: apt-get update failed (rc $rc)" >&2; exit "$rc"; }
  install || { rc=$?; echo "apt-prereqs: apt-get install ${missing[*]} failed (rc $rc)" >&2; exit "$rc"; }
fi

mapfile -t still < <(missing_packages "${missing[@]}")
if [ "${#still[@]}" -gt 0 ]; then
  echo "apt-prereqs: ${still[*]} still not installed after apt-get install" >&2
  exit 1
fi
