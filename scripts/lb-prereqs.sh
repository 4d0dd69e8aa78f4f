#!/usr/bin/env bash
# Installs Debian's haproxy (2.6) and nginx (1.22), the load balancers of the traffic layer's tests and bench
# (tests/behaviour/test_traffic_*.py, bench/traffic_bench.py). The tests start their own instances with their own
# configuration, pid file, socket and ports; the system services are never used (nothing auto-starts here: there
# is no init system, and the install is told not to start them). Quick and silent when both are present; needs
# root to install (scripts/apt-prereqs.sh, which waits for another apt run's lock).
set -euo pipefail

missing=()
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
[ "${#missing[@]}" -eq 0 ] && exit 0

# apt-prereqs.sh: policy-rc.d 101, so the packages' maintainer scripts do not start the system services
bash "$(dirname "${BASH_SOURCE[0]}")/apt-prereqs.sh" --for "the traffic layer's tests" "${missing[@]}"

for exe in haproxy nginx; do
  command -v "$exe" >/dev/null 2>&1 || [ -x "/usr/sbin/$exe" ] || {
    echo "lb-prereqs: $exe still missing after install" >&2; exit 1; }
done
