#!/usr/bin/env bash
# Installs Debian's chromium, the headless browser the HTML incident report is rendered in by its test
# (tests/unit/plugins/plugin_utils/test_html_chromium.py). Quick and silent when it is present; needs root to
# install (scripts/apt-prereqs.sh).
set -euo pipefail

browser=/usr/bin/chromium
[ -x "$browser" ] && exit 0

bash "$(dirname "${BASH_SOURCE[0]}")/apt-prereqs.sh" --for "the HTML report test" chromium

[ -x "$browser" ] || { echo "browser-prereqs: $browser still missing after install" >&2; exit 1; }
