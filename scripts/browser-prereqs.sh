#!/usr/bin/env bash
# Installs Debian's chromium, the headless browser the HTML incident report is rendered in by its test
# (tests/unit/plugins/plugin_utils/test_html_chromium.py). Quick and silent when it is present; needs root to
# install; `apt-get update` only when an install needs it.
set -euo pipefail

browser=/usr/bin/chromium
[ -x "$browser" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "browser-prereqs: $browser is missing (Debian package chromium); run this script as root" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "==> Installing chromium for the HTML report test"
install() { apt-get install -y -q --no-install-recommends chromium >/dev/null; }
if ! install 2>/dev/null; then
  apt-get update -q >/dev/null
  install
fi

[ -x "$browser" ] || { echo "browser-prereqs: $browser still missing after install" >&2; exit 1; }
