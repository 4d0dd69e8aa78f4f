#!/usr/bin/env bash
# The second demo: blue-green behind HAProxy (or nginx: `scripts/demo-blue-green.sh --nginx`) on this machine under
# a steady load, with a failed verification on the idle slot and a switch-back; prints what the load saw.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/env.sh
source "$root/scripts/env.sh"
if [ "$(id -u)" -eq 0 ]; then bash "$root/scripts/lb-prereqs.sh"; fi
exec python "$root/scripts/demo_blue_green.py" "$@"
