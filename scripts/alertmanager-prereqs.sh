#!/usr/bin/env bash
# Installs Debian's prometheus-alertmanager, the real Alertmanager the watch window tests start beside Prometheus (on
# ports of their own, with their own config and data directory; tests/behaviour/test_watch_window.py). Quick and
# silent when it is present; needs root to install (scripts/apt-prereqs.sh, which never starts the package's own
# service).
set -euo pipefail

server=/usr/bin/prometheus-alertmanager
[ -x "$server" ] && exit 0

bash "$(dirname "${BASH_SOURCE[0]}")/apt-prereqs.sh" --for "the watch window tests" prometheus-alertmanager

[ -x "$server" ] || { echo "alertmanager-prereqs: $server still missing after install" >&2; exit 1; }
