#!/usr/bin/env bash
# Installs what the namespace test fleet (tests/fleet) needs: sshd, ssh-keygen, ip, unshare/nsenter and the
# target-side Python. Quick and silent when everything is present; needs root to install (scripts/apt-prereqs.sh).
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

# policy-rc.d (in apt-prereqs.sh) keeps the package from trying to start sshd as a service (nothing here runs an
# init system).
bash "$(dirname "${BASH_SOURCE[0]}")/apt-prereqs.sh" --for "the test fleet" "${missing[@]}"

for path in "${!need[@]}"; do
  [ -x "$path" ] || { echo "fleet-prereqs: $path still missing after install" >&2; exit 1; }
done
