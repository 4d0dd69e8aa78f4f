#!/usr/bin/env bash
# Installs Debian's prometheus, the real metrics server the metric gate tests start (on a port of their own, with
# their own config and data directory; tests/behaviour/prometheus_server.py). Quick and silent when it is present;
# needs root to install; `apt-get update` only when an install needs it. The package's own service is never
# started (policy-rc.d; nothing here runs an init system).
set -euo pipefail

server=/usr/bin/prometheus
[ -x "$server" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "prometheus-prereqs: $server is missing (Debian package prometheus); run this script as root" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "==> Installing prometheus for the metric gate tests"
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 0755 "$policy" && made_policy=1
fi
trap '[ -n "$made_policy" ] && rm -f "$policy"' EXIT

install() { apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
if ! install 2>/dev/null; then
  apt-get update -q >/dev/null
  install
fi

[ -x "$server" ] || { echo "prometheus-prereqs: $server still missing after install" >&2; exit 1; }
