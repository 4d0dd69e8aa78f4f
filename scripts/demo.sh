#!/usr/bin/env bash
# The demo: on this machine, deploy 1.0.0 (good), 2.0.0 (good), then 3.0.0, which fails its health check
# after the switch. The auto_rollback callback notices, alerts, rolls back to 2.0.0, verifies the restore and
# writes the incident report. Everything lives under demo-output/ (or $FAILSAFE_DEMO_DIR).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/env.sh
source "$root/scripts/env.sh"
demo="${FAILSAFE_DEMO_DIR:-$root/demo-output}"
port="${FAILSAFE_DEMO_PORT:-18080}"

stop_supervisor() {
  if [ -S "$demo/supervisor/supervisor.sock" ]; then
    supervisorctl -c "$demo/supervisor/supervisord.conf" shutdown >/dev/null 2>&1 || true
  fi
}
stop_supervisor
rm -rf "$demo"
bash "$root/examples/demo/prepare.sh" "$demo"
if [ "${FAILSAFE_DEMO_KEEP:-0}" != 1 ]; then trap stop_supervisor EXIT; fi

export FAILSAFE_DEMO_DIR="$demo" FAILSAFE_DEMO_PORT="$port"
export ANSIBLE_CONFIG="$root/examples/demo/ansible.cfg"
export FAILSAFE_REPORT_DIR="$demo/incidents"
export FAILSAFE_SPOOL_PATH="$demo/incidents/alerts.jsonl"

deploy() {
  ansible-playbook -i "$root/examples/demo/inventory.yml" failsafe.deploy.deploy -e "release_version=$1"
}

echo "==> Deploying 1.0.0 (good)"
deploy 1.0.0
echo "==> Deploying 2.0.0 (good)"
deploy 2.0.0
echo "==> Deploying 3.0.0 (bad: fails its health check after the switch)"
if deploy 3.0.0; then
  echo "demo: 3.0.0 was expected to fail its health check, but the deploy succeeded" >&2
  exit 1
fi

answer=$(python3 -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip())" \
  "http://127.0.0.1:$port/version")
report=$(find "$demo/incidents" -maxdepth 1 -name 'inc-*.json' ! -name '*.*.json' -printf '%T@ %p\n' 2>/dev/null \
  | sort -n | tail -n 1 | cut -d' ' -f2-)
outcome=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['outcome'])" "$report" 2>/dev/null || echo unknown)
echo
echo "==> Demo finished"
echo "    app now answers version: $answer (expected 2.0.0)"
echo "    outcome:         $outcome"
echo "    incident report: $report"
echo "                     ${report%.json}.md"
echo "                     ${report%.json}.html"
echo "    alert spool:     $FAILSAFE_SPOOL_PATH"
[ "$answer" = "2.0.0" ] && [ "$outcome" = "rolled_back" ]
