#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job: set everything up, then run SchedCP's demo in the sched_ext micro-VM.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/ensure-env.sh"
cd "$REPO"
if schedcp optimize --help >/dev/null 2>&1; then
    exec schedcp optimize --demo "$@"
fi
schedcp doctor
exec schedcp vm run --scheduler minimal --json -- cat /sys/kernel/sched_ext/root/ops
