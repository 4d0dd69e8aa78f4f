#!/usr/bin/env bash
# Runs the Ansible ecosystem gates on this collection and prints one PASS/FAIL line per gate with its time.
#
#   scripts/checks.sh                 all gates
#   scripts/checks.sh sanity lint     only the named gates
#   scripts/checks.sh --list          the gate names
#
# Gates: sanity (ansible-test sanity), units (ansible-test units), shellcheck, lint (ansible-lint production
# profile), importer (galaxy-importer on the built tarball), changelog (antsibull-changelog lint), docs
# (scripts/gen_role_docs.py --check, antsibull-docs lint-collection-docs --plugin-docs), builder (ansible-builder introspect and create).
# awx (syntax check and production lint of examples/awx/ against the real awx.awx collection).
# Each gate's full output goes to .build/checks/<gate>.log; a failing gate also prints the end of its log.
# FAILSAFE_CHECKS_VERBOSE=1 streams every log to the terminal as well.
# Exit status: 0 when every gate that ran passed, 1 otherwise, 2 on a usage error.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/env.sh
source "$root/scripts/env.sh"
# shellcheck source=scripts/venv.sh
source "$root/scripts/venv.sh"

all_gates=(sanity units shellcheck lint importer changelog docs builder awx)
python_version=3.11
logs="$root/.build/checks"
checks_venv="${FAILSAFE_CHECKS_VENV:-$root/.build/venv-checks}"
# ansible-test keeps its virtual environments under a HOME, so later runs reuse them: it lives in the cache beside
# the virtualenvs (scripts/venv.sh), named by the hash of what those environments are made from and by the gate
# (sanity and units build different environments, and a HOME of each lets the two gates run at the same time).
test_home_base="$(venv_cache_dir)/ansible-test-home-$(cat "$root/requirements-dev.lock" "$root/tests/unit/requirements.txt" \
  "$root"/scripts/ansible-test-bootstrap/* 2>/dev/null | sha256sum | cut -c1-16)"
dist="$root/.build/dist"
verbose="${FAILSAFE_CHECKS_VERBOSE:-0}"
stage=""

cleanup() {
  if [ -n "$stage" ] && [ -d "$stage" ]; then
    if [ "${FAILSAFE_CHECKS_KEEP:-0}" = 1 ]; then
      log "kept $stage"
    else
      rm -rf "$stage"
    fi
  fi
  stage=""
}
trap cleanup EXIT

log() { printf '%s\n' "$*" >&2; }

# Files of the project: tracked plus untracked-but-not-ignored, so .venv/, .build/ and other ignored paths never
# take part (the .build/collections link points back at the repository root and would loop).
project_files() {
  if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$root" ls-files -z --cached --others --exclude-standard \
      | while IFS= read -r -d '' f; do
          if [ -f "$root/$f" ] || [ -L "$root/$f" ]; then printf '%s\0' "$f"; fi
        done
  else
    (cd "$root" && find . \( -path ./.venv -o -path ./.build -o -path ./.git -o -path ./tests/output \
        -o -name __pycache__ -o -name .pytest_cache \) -prune -o \( -type f -o -type l \) -print0 \
      | sed -z 's|^\./||')
  fi
}

# A throwaway copy at <tmp>/ansible_collections/failsafe/deploy, as ansible-test wants it. It lives outside the
# repository: ansible-test walks up from the collection to find a .git and would otherwise pick up ours.
# Each gate gets a fresh copy, so nothing one gate leaves behind (test output, links made by tests/conftest.py) is
# seen by the next. FAILSAFE_CHECKS_KEEP=1 keeps the last copy for inspection.
stage_collection() {
  cleanup
  stage=$(mktemp -d "${TMPDIR:-/tmp}/failsafe-checks.XXXXXX")
  local dest="$stage/ansible_collections/failsafe/deploy"
  mkdir -p "$dest"
  project_files | (cd "$root" && tar --null -T - -cf -) | tar -xf - -C "$dest"
}

collection_dir() { printf '%s\n' "$stage/ansible_collections/failsafe/deploy"; }

# Second virtualenv for tools whose pins clash with the main one (galaxy-importer wants attrs<24), locked like the
# main one (requirements-checks.lock) and cached the same way (scripts/venv.sh).
ensure_checks_venv() {
  ensure_venv checks "$checks_venv" galaxy_importer antsibull_docs ansible_builder
}

# Runs a command with the checks venv first on PATH (galaxy-importer shells out to ansible-doc and ansible-lint).
in_checks_venv() {
  PATH="$checks_venv/bin:$PATH" VIRTUAL_ENV="$checks_venv" "$@"
}

prepare_test_home() {
  mkdir -p "$1"
  python "$root/scripts/ansible-test-bootstrap/prepare_home.py" "$1" >/dev/null
}

# run_ansible_test COMMAND ARGS...: ansible-test COMMAND in a fresh staged copy, under the HOME of that command.
run_ansible_test() {
  local test_home="$test_home_base-$1"
  stage_collection && prepare_test_home "$test_home" || return 1
  # ansible-test keeps only HOME, PATH and LC_ALL of the environment; pip settings come from $test_home.
  (cd "$(collection_dir)" && HOME="$test_home" ansible-test "$@" --venv --python "$python_version" --color no)
}

build_tarball() {
  rm -rf "$dist" && mkdir -p "$dist"
  (cd "$root" && ansible-galaxy collection build --force --output-path "$dist" .) || return 1
}

tarball() {
  local files=("$dist"/failsafe-deploy-*.tar.gz)
  [ -f "${files[0]}" ] && printf '%s\n' "${files[0]}"
}

gate_sanity() {
  run_ansible_test sanity
}

# FAILSAFE_CHECKS_JUNIT_DIR=DIR keeps the unit tests' JUnit reports (one per ansible-test context) in DIR:
# scripts/test.sh counts the unit tests and their durations from them.
gate_units() {
  local rc=0 junit="${FAILSAFE_CHECKS_JUNIT_DIR:-}"
  run_ansible_test units || rc=$?
  if [ -n "$junit" ]; then
    mkdir -p "$junit"
    rm -f "$junit"/*.xml
    cp "$(collection_dir)"/tests/output/junit/*-units.xml "$junit"/ || rc=1
  fi
  return "$rc"
}

gate_shellcheck() {
  if ! command -v shellcheck >/dev/null; then
    log "shellcheck not found: installing it with apt-get"
    apt-get install -y -qq shellcheck >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq shellcheck; } || return 1
  fi
  local files=()
  while IFS= read -r -d '' f; do
    case "$f" in
      *.sh | .ci/run) files+=("$f") ;;
    esac
  done < <(project_files)
  if [ "${#files[@]}" -eq 0 ]; then
    log "no shell scripts found"
    return 1
  fi
  echo "shellcheck $(shellcheck --version | sed -n 's/^version: //p') on ${#files[@]} files: ${files[*]}"
  (cd "$root" && shellcheck --external-sources --source-path=SCRIPTDIR --source-path="$root" "${files[@]}")
}

gate_lint() {
  local paths=() p
  for p in roles playbooks examples; do
    if [ -d "$root/$p" ]; then paths+=("$p"); fi
  done
  # The whole project is linted (galaxy.yml, meta/runtime.yml, changelog and the directories above); .ansible-lint
  # keeps .venv, .build and tests/output out. ansible-lint caches into <project>/.ansible: point it at .build.
  echo "ansible-lint over the project, including: ${paths[*]:-(none of roles/ playbooks/ examples/ exist yet)}"
  (cd "$root" && ANSIBLE_HOME="$root/.build/ansible-lint-home" \
    ansible-lint --profile production --offline --nocolor -f pep8 --config-file "$root/.ansible-lint")
}

gate_importer() {
  ensure_checks_venv || return 1
  build_tarball || return 1
  local tar out rc
  tar=$(tarball) || { log "no tarball in $dist"; return 1; }
  out="$dist/importer.log"
  echo "galaxy-importer $(in_checks_venv python -c 'import galaxy_importer; print(galaxy_importer.__version__)') on $tar"
  (cd "$dist" && HOME="$root/.build/importer-home" GALAXY_IMPORTER_CONFIG="$root/scripts/galaxy-importer.cfg" \
    in_checks_venv python -m galaxy_importer.main "$tar") >"$out" 2>&1
  rc=$?
  cat "$out"
  if [ "$rc" -ne 0 ]; then
    log "galaxy-importer exited $rc"
    return 1
  fi
  # Any ERROR or WARNING fails the gate. There are no tests/sanity/ignore-*.txt files: sanity findings are fixed,
  # not ignored, and the importer warns about an ignore file even when it is empty.
  local findings
  findings=$(grep -E '^(ERROR|WARNING|CRITICAL)' "$out")
  if [ -n "$findings" ]; then
    log "galaxy-importer reported errors or warnings:"
    printf '%s\n' "$findings" >&2
    return 1
  fi
  grep -q 'Importer processing completed successfully' "$out"
}

gate_changelog() {
  (cd "$root" && antsibull-changelog lint -v)
}

gate_docs() {
  # Role docs are generated from the commented defaults: stale ones, options sharing one text, or a macro that a
  # template breaks fail the gate.
  python3 "$root/scripts/gen_role_docs.py" --check || return 1
  ensure_checks_venv || return 1
  stage_collection || return 1
  # The linter resolves collection references through ANSIBLE_COLLECTIONS_PATH: give it the staged copy only.
  in_checks_venv env ANSIBLE_COLLECTIONS_PATH="$stage" \
    antsibull-docs lint-collection-docs --plugin-docs --validate-collection-refs all "$(collection_dir)"
}

gate_builder() {
  ensure_checks_venv || return 1
  stage_collection || return 1
  local out
  # introspect lists the collections below <dir>/ansible_collections; its --sanitize flag is the default since v3.
  out=$(in_checks_venv ansible-builder introspect --sanitize "$stage") || { echo "$out"; return 1; }
  echo "$out"
  # Every requirement of requirements.txt and meta/ee-bindep.txt must be picked up for failsafe.deploy.
  in_checks_venv python - "$out" "$root/requirements.txt" "$root/meta/ee-bindep.txt" <<'EOF' || return 1
import sys
import yaml

data = yaml.safe_load(sys.argv[1])
failed = False
for kind, path in (('python', sys.argv[2]), ('system', sys.argv[3])):
    with open(path, encoding='utf-8') as handle:
        want = [line.split('#')[0].strip() for line in handle if line.split('#')[0].strip()]
    got = ' '.join(data.get(kind) or [])
    for req in want:
        if req not in got:
            print('introspect lost %s requirement %r from %s' % (kind, req, path))
            failed = True
sys.exit(1 if failed else 0)
EOF
  # The sample execution environment must render into a build context (no container engine needed).
  rm -rf "$root/.build/ee-context"
  (cd "$root/examples/ee" && in_checks_venv ansible-builder create --file execution-environment.yml \
    --context "$root/.build/ee-context" --output-filename Containerfile -v 2) || return 1
  test -s "$root/.build/ee-context/Containerfile"
}

# Third virtualenv with the `ansible` package, the only offline source of the awx.awx collection (up to Ansible 13).
awx_venv="${FAILSAFE_AWX_VENV:-$root/.build/venv-awx}"
ensure_awx_venv() {
  ensure_venv awx "$awx_venv"
}

# examples/awx/ uses awx.awx modules, which the main virtualenv lacks: the lint gate leaves it out
# (.ansible-lint) and this gate checks it with the collection installed by the `ansible` package.
gate_awx() {
  ensure_awx_venv || return 1
  local collections home="$root/.build/awx-home" playbooks=()
  collections=$("$awx_venv/bin/python" -c 'import ansible_collections, os; print(os.path.dirname(list(ansible_collections.__path__)[0]))') \
    || return 1
  test -d "$collections/ansible_collections/awx/awx" || { log "awx.awx is not in $collections"; return 1; }
  mkdir -p "$home"
  while IFS= read -r -d '' f; do playbooks+=("$f"); done < <(cd "$root" && find examples/awx -name '*.yml' -print0 | sort -z)
  [ "${#playbooks[@]}" -gt 0 ] || { log "no playbook in examples/awx"; return 1; }
  echo "awx.awx $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["collection_info"]["version"])' \
    "$collections/ansible_collections/awx/awx/MANIFEST.json") on ${playbooks[*]}"
  local p
  for p in "${playbooks[@]}"; do
    (cd "$root" && ANSIBLE_HOME="$home" ANSIBLE_COLLECTIONS_PATH="$collections" ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false \
      "$awx_venv/bin/ansible-playbook" --syntax-check "$p") || return 1
  done
  printf 'profile: production\noffline: true\n' >"$home/ansible-lint.yml"
  (cd "$root" && ANSIBLE_HOME="$home" ANSIBLE_COLLECTIONS_PATH="$collections" \
    "$awx_venv/bin/ansible-lint" --profile production --offline --nocolor -f pep8 --config-file "$home/ansible-lint.yml" \
    "${playbooks[@]}")
}

# What a failed gate shows: its finding lines (ERROR/FAILED/path:line: ...), at most 80, else the end of its log.
findings() {
  local logfile=$1 pattern count
  pattern='^(ERROR|FATAL|FAILED|CRITICAL|WARNING: [a-z_./-]+:[0-9]+)|^[^ :]+:[0-9]+(:[0-9]+)?: |^In [^ ]+ line [0-9]+:$|SC[0-9]{4}'
  count=$(grep -cE "$pattern" "$logfile")
  if [ "$count" -eq 0 ]; then
    tail -n 40 "$logfile"
    return 0
  fi
  grep -E "$pattern" "$logfile" | head -n 80
  if [ "$count" -gt 80 ]; then
    echo "... $((count - 80)) more lines in the log"
  fi
  tail -n 1 "$logfile"
}

run_gate() {
  local gate=$1 start end rc status
  local logfile="$logs/$gate.log"
  start=$(date +%s.%N)
  if [ "$verbose" = 1 ]; then
    "gate_$gate" 2>&1 | tee "$logfile"
    rc=${PIPESTATUS[0]}
  else
    "gate_$gate" >"$logfile" 2>&1
    rc=$?
  fi
  end=$(date +%s.%N)
  status=PASS
  if [ "$rc" -ne 0 ]; then status=FAIL; fi
  printf '%s %-10s %7.1fs  (log: %s)\n' "$status" "$gate" "$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }')" "${logfile#"$root"/}"
  if [ "$rc" -ne 0 ] && [ "$verbose" != 1 ]; then
    findings "$logfile" | sed 's/^/    | /'
  fi
  return "$rc"
}

main() {
  local gates=() gate g known failed=0
  if [ "${1:-}" = "--list" ]; then
    printf '%s\n' "${all_gates[@]}"
    return 0
  fi
  if [ "$#" -eq 0 ]; then
    gates=("${all_gates[@]}")
  else
    for gate in "$@"; do
      known=0
      for g in "${all_gates[@]}"; do
        if [ "$g" = "$gate" ]; then known=1; fi
      done
      if [ "$known" = 0 ]; then
        log "unknown gate '$gate'; known gates: ${all_gates[*]}"
        return 2
      fi
      gates+=("$gate")
    done
  fi
  mkdir -p "$logs"
  # One run at a time of each gate: the runs of a gate share its ansible-test HOME, its log, the checks venv and
  # .build/dist (importer, docs and builder share the lock "checks-venv"). Different gates may run side by side.
  local lock
  for gate in "${gates[@]}"; do
    case "$gate" in
      importer | docs | builder) lock='checks-venv' ;;
      *) lock=$gate ;;
    esac
    exec 9>"$logs/.lock-$lock"
    if ! flock -n 9; then
      log "waiting for another scripts/checks.sh run of $gate to finish"
      flock 9
    fi
    run_gate "$gate" || failed=$((failed + 1))
    exec 9>&-
  done
  if [ "$failed" -ne 0 ]; then
    echo "checks: $failed of ${#gates[@]} gates failed"
    return 1
  fi
  echo "checks: all ${#gates[@]} gates passed"
}

main "$@"
