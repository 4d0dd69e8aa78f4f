#!/usr/bin/env bash
# Installs what the power-cut filesystem of the tests (tests/powercut) needs: Debian's fuse3 (the libfuse3 that the
# mfusepy wheel of requirements-dev.txt loads, and fusermount3). Quick and silent when it is present; needs root to
# install (scripts/apt-prereqs.sh).
set -euo pipefail
bash "$(dirname "${BASH_SOURCE[0]}")/apt-prereqs.sh" --for "the power-cut filesystem" fuse3 libfuse3-3
