#!/usr/bin/env bash
# Installs Debian's prometheus, the real metrics server the metric gate tests start (on a port of their own, with
# their own config and data directory; tests/behaviour/prometheus_server.py). Quick and silent when it is present;
# needs root to install (scripts/apt-prereqs.sh, which never starts the package's own service).
set -euo pipefail

server=/usr/bin/prometheus
[ -x "$server" ] && exit 0

bash "$(dirname "${BASH_SOURCE[0]}")/apt-prereqs.sh" --for "the metric gate tests" prometheus

[ -x "$server" ] || { echo "prometheus-prereqs: $server still missing after install" >&2; exit 1; }
