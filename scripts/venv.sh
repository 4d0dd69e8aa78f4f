# shellcheck shell=bash
# Sourced by the scripts that need a virtualenv of pinned tooling: `ensure_venv NAME LINK` makes LINK (a path in
# the checkout, such as .venv) lead to a virtualenv with requirements-NAME.txt installed under the exact versions of
# requirements-NAME.lock.
#
# The virtualenv itself lives in a cache outside the checkout, named by the hash of the requirements, the lock and the
# Python version (FAILSAFE_CACHE_DIR, default /var/cache/failsafe-deploy when writable, else ~/.cache/failsafe-deploy),
# so a fresh clone of an unchanged lock reuses it instead of installing again; LINK is a symbolic link to it. A
# virtualenv is not relocatable, so it is built in place under a lock, and only a build that finished (its stamp
# written) is ever used. FAILSAFE_NO_VENV_CACHE=1 builds LINK as a plain virtualenv in the checkout instead.
#
# The lock files are refreshed on purpose with scripts/lock.sh.
#
# The virtualenvs are made from FAILSAFE_PYTHON when it is set, else from the distribution's /usr/bin/python3 when it
# is the same Python version as `python3` and has its venv module, else from `python3`. A distribution's build is
# compiled with profile-guided and link-time optimisation, which a build from source (pyenv's, by default) is not:
# ansible-playbook, its forked workers and pytest use about 15% less CPU on it (make bench, part interpreter, in
# bench/interpreter_bench.py, measures both on this machine). The cache key names the interpreter, so each has
# virtualenvs of its own.

# venv_python: the interpreter the virtualenvs are made from (see above).
venv_python() {
  if [ -n "${FAILSAFE_PYTHON:-}" ]; then
    printf '%s\n' "$FAILSAFE_PYTHON"
    return 0
  fi
  local version
  version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ -x /usr/bin/python3 ] && [ "$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$version" ] \
    && /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null; then
    printf '%s\n' /usr/bin/python3
  else
    printf '%s\n' python3
  fi
}

venv_cache_dir() {
  if [ -n "${FAILSAFE_CACHE_DIR:-}" ]; then
    printf '%s\n' "$FAILSAFE_CACHE_DIR"
  elif mkdir -p /var/cache/failsafe-deploy 2>/dev/null && [ -w /var/cache/failsafe-deploy ]; then
    printf '%s\n' /var/cache/failsafe-deploy
  else
    printf '%s\n' "${XDG_CACHE_HOME:-$HOME/.cache}/failsafe-deploy"
  fi
}

# install_venv DIR REQUIREMENTS LOCK PYTHON: a new virtualenv at DIR, made by PYTHON, with REQUIREMENTS installed
# under LOCK's versions.
install_venv() {
  local dir=$1 requirements=$2 lock=$3 python=$4
  "$python" -m venv "$dir" || return 1
  local constraint=()
  [ -f "$lock" ] && constraint=(-c "$lock")
  "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" "${constraint[@]}" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" >&2
  return "${PIPESTATUS[0]}"
}

# ensure_venv NAME LINK [IMPORT...]: LINK leads to a finished virtualenv of requirements-NAME.txt (+ .lock); the
# optional IMPORT modules must import in it. Prints "==> ..." lines only when it builds.
ensure_venv() {
  local name=$1 link=$2
  shift 2
  local root requirements lock want python
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  requirements="$root/requirements-$name.txt"
  lock="$root/requirements-$name.lock"
  python=$(venv_python)
  # the Python version, and which interpreter of it (its real path and build, hashed)
  want=$(cat "$requirements" "$lock" 2>/dev/null | sha256sum | cut -c1-16)-$("$python" -c '
import hashlib, os, sys
print("py%d.%d-%s" % (sys.version_info[:2] + (hashlib.sha256((os.path.realpath(sys.executable) + sys.version).encode()).hexdigest()[:8],)))')
  local checks=(true)
  if [ "$#" -gt 0 ]; then
    checks=("import $(IFS=,; echo "$*")")
  fi

  if [ "${FAILSAFE_NO_VENV_CACHE:-0}" = 1 ]; then
    if [ -L "$link" ]; then rm -f "$link"; fi
    if [ -e "$link" ] && [ ! -f "$link/.failsafe-stamp" ]; then
      echo "$link exists and was not made by these scripts: move it away" >&2
      return 1
    fi
    if [ -x "$link/bin/python" ] && [ "$(cat "$link/.failsafe-stamp" 2>/dev/null)" = "$want" ]; then
      return 0
    fi
    echo "==> Creating virtualenv $link ($name tooling, locked versions)" >&2
    rm -rf "$link"
    install_venv "$link" "$requirements" "$lock" "$python" || return 1
    if [ "${checks[0]}" != true ]; then "$link/bin/python" -c "${checks[0]}" || return 1; fi
    echo "$want" >"$link/.failsafe-stamp"
    return 0
  fi

  local cache dir
  cache=$(venv_cache_dir)
  dir="$cache/venv-$name-$want"
  mkdir -p "$cache" || return 1
  if [ ! -f "$dir/.failsafe-stamp" ]; then
    (
      flock 9
      if [ ! -f "$dir/.failsafe-stamp" ]; then
        echo "==> Creating virtualenv $dir ($name tooling, locked versions; cached by the hash of the lock)" >&2
        rm -rf "$dir"
        install_venv "$dir" "$requirements" "$lock" "$python" || { rm -rf "$dir"; exit 1; }
        if [ "${checks[0]}" != true ]; then "$dir/bin/python" -c "${checks[0]}" || { rm -rf "$dir"; exit 1; }; fi
        echo "$want" >"$dir/.failsafe-stamp"
      fi
    ) 9>"$dir.lock" || { echo "virtualenv $name: install failed" >&2; return 1; }
  fi
  if [ "$(readlink "$link" 2>/dev/null)" != "$dir" ]; then
    replace_with_link "$link" "$dir" || return 1
  fi
}

# replace_with_link LINK DIR: LINK becomes a symbolic link to DIR. What stands at LINK is replaced only when it is
# a link or a virtualenv these scripts made (it has their stamp); anything else is left alone, with an error.
replace_with_link() {
  local link=$1 dir=$2
  if [ -e "$link" ] && [ ! -L "$link" ]; then
    if [ ! -f "$link/.failsafe-stamp" ]; then
      echo "$link exists and was not made by these scripts: move it away or set FAILSAFE_NO_VENV_CACHE=1" >&2
      return 1
    fi
    # renamed first: a process still running from the old virtualenv finds the same files through the link
    mv "$link" "$link.replaced.$$" && rm -rf "$link.replaced.$$"
  fi
  mkdir -p "$(dirname "$link")"
  ln -sfn "$dir" "$link.new.$$" && mv -T "$link.new.$$" "$link"
}
