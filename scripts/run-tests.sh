#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The full test suite, including the tests that boot the real sched_ext kernel in QEMU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/ensure-env.sh"
cd "$REPO"
log "static checks: ruff, ruff format, mypy"
ruff check src tests benchmarks
ruff format --check src tests benchmarks
mypy
exec pytest -q "$@"
