#!/usr/bin/env bash
# Installs what the fleet's systemd hosts (tests/fleet, init='systemd') need: systemd itself (PID 1 of each host,
# systemctl and systemd-run on it). Quick and silent when it is present; needs root to install
# (scripts/apt-prereqs.sh). Nothing is started or enabled on the machine: the hosts run their own systemd in their
# own namespaces.
set -euo pipefail

declare -A need=(
  [/lib/systemd/systemd]=systemd
  [/usr/bin/systemctl]=systemd
  [/usr/bin/systemd-run]=systemd
)

missing=()
for path in "${!need[@]}"; do
  [ -x "$path" ] || missing+=("${need[$path]}")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

bash "$(dirname "${BASH_SOURCE[0]}")/apt-prereqs.sh" --for "the systemd fleet hosts" "${missing[@]}"

for path in "${!need[@]}"; do
  [ -x "$path" ] || { echo "systemd-prereqs: $path still missing after install" >&2; exit 1; }
done
