#!/usr/bin/env bash
# Prepares a demo directory: release archives and a private supervisord configuration.
# Usage: prepare.sh DIR
set -euo pipefail
dir=$(mkdir -p "$1" && cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir/supervisor/conf.d" "$dir/logs" "$dir/dist" "$dir/srv" "$dir/state"
python3 "$here/../app/build.py" --out "$dir/dist" >/dev/null
cat > "$dir/supervisor/supervisord.conf" <<CONF
[unix_http_server]
file=$dir/supervisor/supervisor.sock

[supervisord]
pidfile=$dir/supervisor/supervisord.pid
logfile=$dir/logs/supervisord.log
childlogdir=$dir/logs

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://$dir/supervisor/supervisor.sock

[include]
files = $dir/supervisor/conf.d/*.conf
CONF
