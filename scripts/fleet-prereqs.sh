#!/usr/bin/env bash
# Installs what the namespace test fleet (tests/fleet) needs: sshd, ssh-keygen, ip, unshare/nsenter and the
# target-side Python. Quick and silent when everything is present; `apt-get update` only when an install needs it.
set -euo pipefail

# command -> Debian package that ships it
declare -A need=(
  [/usr/sbin/sshd]=openssh-server
  [/usr/bin/ssh]=openssh-client
  [/usr/bin/ssh-keygen]=openssh-client
  [/usr/sbin/ip]=iproute2
  [/usr/bin/unshare]=util-linux
  [/usr/bin/nsenter]=util-linux
  [/usr/bin/python3]=python3
)

missing=()
for path in "${!need[@]}"; do
  [ -x "$path" ] || missing+=("${need[$path]}")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
  echo "fleet-prereqs: missing ${pkgs[*]}; run this script as root" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "==> Installing ${pkgs[*]} for the test fleet"
# policy-rc.d keeps the package from trying to start sshd as a service (nothing here runs an init system).
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 0755 "$policy" && made_policy=1
fi
trap '[ -n "$made_policy" ] && rm -f "$policy"' EXIT

install() { apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null; }
if ! install 2>/dev/null; then
  apt-get update -q >/dev/null
  install
fi

for path in "${!need[@]}"; do
  [ -x "$path" ] || { echo "fleet-prereqs: $path still missing after install" >&2; exit 1; }
done
