#!/usr/bin/env bash
# Installs Debian's haproxy (2.6) and nginx (1.22), the load balancers of the traffic layer's tests and bench
# (tests/behaviour/test_traffic_*.py, bench/traffic_bench.py). The tests start their own instances with their own
# configuration, pid file, socket and ports; the system services are never used (nothing auto-starts here: there
# is no init system, and the install is told not to start them). Quick and silent when both are present; needs
# root to install; `apt-get update` only when an install needs it; waits for another apt run's lock.
set -euo pipefail

missing=()
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "lb-prereqs: missing ${missing[*]} (Debian packages); run this script as root" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "==> Installing ${missing[*]} for the traffic layer's tests"
# policy-rc.d 101: the packages' maintainer scripts must not start the system services
policy=/usr/sbin/policy-rc.d
own_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 0755 "$policy" && own_policy=true
fi
cleanup() { if $own_policy; then rm -f "$policy"; fi; }
trap cleanup EXIT
install() { apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null; }
if ! install 2>/dev/null; then
  apt-get update -q -o DPkg::Lock::Timeout=600 >/dev/null
  install
fi

for exe in haproxy nginx; do
  command -v "$exe" >/dev/null 2>&1 || [ -x "/usr/sbin/$exe" ] || {
    echo "lb-prereqs: $exe still missing after install" >&2; exit 1; }
done
