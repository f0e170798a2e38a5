# SPDX-License-Identifier: Apache-2.0
"""A real parallel build: generate a multi-file C project and build it with ``make -j`` and gcc.

    python3 -m schedcp_workloads.build --files 32 --heavy 2 --jobs 4

The generated project has ``--files`` ordinary modules (each including its own header and the
header of a module it calls, so the Makefile carries real header dependencies), ``--heavy``
translation units that take several times longer to compile (hundreds of switch-heavy functions),
a ``main.c`` and a link step. It is generated from ``--seed`` into a fresh directory, so every run
builds exactly the same thing from scratch. Heavy units sit at seeded positions in the object list.

The metric is the wall time of ``make -j JOBS``. The built program prints a checksum over every
module's function; the generator computes the same value in Python (64-bit wrapping arithmetic),
and a mismatch, a failed compile or a missing program exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

MASK = (1 << 64) - 1
ROUNDS = 8
HEAVY_FUNCS = 12

COMMON_H = """#pragma once
#include <stdint.h>
#define ROTL(x, s) (((x) << (s)) | ((x) >> (64 - (s))))
"""


def rotl(x: int, s: int) -> int:
    return ((x << s) | (x >> (64 - s))) & MASK


class Module:
    """One ordinary module: a few rounds of multiply/rotate, then a call into its dependency."""

    def __init__(self, index: int, rng: random.Random, dep: int | None) -> None:
        self.name = f"mod_{index:03d}"
        self.dep = f"mod_{dep:03d}" if dep is not None else None
        self.mul = rng.getrandbits(64) | 1
        self.add = rng.getrandbits(64)
        self.rot = rng.randrange(1, 64)
        self.table = [rng.getrandbits(64) for _ in range(16)]

    def c_source(self) -> str:
        dep_inc = f'#include "{self.dep}.h"\n' if self.dep else ""
        dep_call = f"acc + {self.dep}(acc & 0xffffu)" if self.dep else "acc"
        table = ", ".join(f"{v}ull" for v in self.table)
        return f"""#include "common.h"
#include "{self.name}.h"
{dep_inc}
static const uint64_t table[16] = {{{table}}};

static uint64_t mix(uint64_t acc, unsigned r)
{{
\treturn ROTL(acc * {self.mul}ull + ({self.add}ull ^ r), {self.rot}) ^ (acc >> 17) ^ table[(acc ^ r) & 15];
}}

uint64_t {self.name}(uint64_t x)
{{
\tuint64_t acc = x;
\tfor (unsigned r = 0; r < {ROUNDS}; r++)
\t\tacc = mix(acc, r);
\treturn {dep_call};
}}
"""

    def header(self) -> str:
        return f"#pragma once\n#include <stdint.h>\nuint64_t {self.name}(uint64_t x);\n"

    def value(self, x: int, modules: dict[str, Module]) -> int:
        acc = x
        for r in range(ROUNDS):
            acc = rotl((acc * self.mul + (self.add ^ r)) & MASK, self.rot) ^ (acc >> 17) ^ self.table[(acc ^ r) & 15]
        if self.dep:
            return (acc + modules[self.dep].value(acc & 0xFFFF, modules)) & MASK
        return acc


class Heavy:
    """A translation unit with many small switch-heavy functions: slow to compile, quick to run."""

    def __init__(self, index: int, rng: random.Random) -> None:
        self.name = f"gen_{index}"
        self.funcs = [
            [(rng.getrandbits(64) | 1, rng.getrandbits(64), rng.randrange(1, 64)) for _ in range(8)]
            for _ in range(HEAVY_FUNCS)
        ]

    def c_source(self) -> str:
        out = ['#include "common.h"', f'#include "{self.name}.h"', ""]
        for j, cases in enumerate(self.funcs):
            out.append(f"static uint64_t f{j}(uint64_t x)\n{{\n\tswitch (x & 7) {{")
            for c, (mul, add, rot) in enumerate(cases):
                out.append(f"\tcase {c}: return ROTL(x * {mul}ull + {add}ull, {rot}) ^ (x >> {c + 3});")
            out.append("\t}\n\treturn x;\n}\n")
        out.append(f"uint64_t {self.name}(uint64_t x)\n{{\n\tuint64_t acc = 0;")
        out += [f"\tacc ^= f{j}(x + {j}u);" for j in range(len(self.funcs))]
        out.append("\treturn acc;\n}\n")
        return "\n".join(out)

    def header(self) -> str:
        return f"#pragma once\n#include <stdint.h>\nuint64_t {self.name}(uint64_t x);\n"

    def value(self, x: int) -> int:
        acc = 0
        for j, cases in enumerate(self.funcs):
            y = (x + j) & MASK
            mul, add, rot = cases[y & 7]
            acc ^= rotl((y * mul + add) & MASK, rot) ^ (y >> ((y & 7) + 3))
        return acc


def generate(root: str, files: int, heavy: int, seed: int) -> str:
    """Write the project into `root`; returns the checksum the built program must print."""
    rng = random.Random(seed)
    modules: dict[str, Module] = {}
    for i in range(files):
        dep = rng.randrange(i) if i and rng.random() < 0.7 else None
        modules[f"mod_{i:03d}"] = Module(i, rng, dep)
    heavies = [Heavy(k, rng) for k in range(heavy)]
    units: list[Module | Heavy] = list(modules.values())
    for h in heavies:
        units.insert(rng.randrange(len(units) + 1), h)
    seed_value = rng.getrandbits(64)

    def write(name: str, text: str) -> None:
        with open(os.path.join(root, name), "w") as f:
            f.write(text)

    write("common.h", COMMON_H)
    for unit in units:
        write(f"{unit.name}.c", unit.c_source())
        write(f"{unit.name}.h", unit.header())
    includes = "".join(f'#include "{u.name}.h"\n' for u in units)
    calls = "".join(f"\tsum = ROTL(sum, 7) ^ {u.name}(seed + {i}u);\n" for i, u in enumerate(units))
    write(
        "main.c",
        f"""#include <stdio.h>
#include "common.h"
{includes}
int main(void)
{{
\tuint64_t seed = {seed_value}ull, sum = 0;
{calls}\tprintf("%016llx\\n", (unsigned long long)sum);
\treturn 0;
}}
""",
    )
    objs = " ".join(f"{u.name}.o" for u in units)
    deps = []
    for m in modules.values():
        extra = f" {m.dep}.h" if m.dep else ""
        deps.append(f"{m.name}.o: {m.name}.c {m.name}.h{extra} common.h")
    deps += [f"{h.name}.o: {h.name}.c {h.name}.h common.h" for h in heavies]
    write(
        "Makefile",
        f"""CC ?= gcc
CFLAGS ?= -O2 -std=c11 -Wall -Werror
OBJS = {objs} main.o

app: $(OBJS)
\t$(CC) $(CFLAGS) -o $@ $(OBJS)

%.o: %.c
\t$(CC) $(CFLAGS) -c -o $@ $<

main.o: main.c common.h {" ".join(f"{u.name}.h" for u in units)}
{chr(10).join(deps)}
""",
    )
    total = 0
    for i, unit in enumerate(units):
        v = (
            unit.value((seed_value + i) & MASK, modules)
            if isinstance(unit, Module)
            else unit.value((seed_value + i) & MASK)
        )
        total = rotl(total, 7) ^ v
    return f"{total:016x}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="build", description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=32, help="ordinary modules")
    ap.add_argument("--heavy", type=int, default=2, help="slow-to-compile translation units")
    ap.add_argument("--jobs", type=int, default=0, help="make -j (0: twice the CPU count)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cc", default="gcc")
    ap.add_argument("--workdir", default=None, help="parent of the build directory (default: the temp dir)")
    args = ap.parse_args(argv)
    if not (1 <= args.files <= 2000 and 0 <= args.heavy <= 50 and 0 <= args.jobs <= 1024):
        ap.error("--files 1..2000 --heavy 0..50 --jobs 0..1024")
    jobs = args.jobs or 2 * (os.cpu_count() or 1)
    for tool in ("make", args.cc):
        if shutil.which(tool) is None:
            print(json.dumps({"workload": "build", "ok": False, "errors": [f"{tool} is not installed"]}), flush=True)
            return 1
    root = tempfile.mkdtemp(prefix="schedcp-build-", dir=args.workdir)
    errors: list[str] = []
    try:
        expected = generate(root, args.files, args.heavy, args.seed)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        proc = subprocess.run(
            ["make", "-s", f"-j{jobs}", f"CC={args.cc}"], cwd=root, capture_output=True, text=True, timeout=3600
        )
        build_s = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            errors.append(f"make failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
            got = ""
        else:
            run = subprocess.run([os.path.join(root, "app")], capture_output=True, text=True, timeout=60)
            got = run.stdout.strip()
            if got != expected:
                errors.append(f"the program printed {got!r}, expected {expected!r}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "workload": "build",
        "ok": not errors,
        "metrics": {"build_s": round(build_s, 4), "compile_cpu_s": round(cpu_s, 3)} if not errors or got else {},
        "params": {"files": args.files, "heavy": args.heavy, "jobs": jobs, "seed": args.seed},
        "checksum": got,
        "errors": errors,
    }
    print(json.dumps(result), flush=True)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
