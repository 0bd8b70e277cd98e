#!/usr/bin/env python3
"""The link order of grpcproxy's hot functions, from callgrind dumps with instruction
addresses (scripts/callgrind.sh with INSTR=1), for lld's `--symbol-ordering-file`
(grpcproxy-cli/build.rs; BENCHMARKS.md, "#24, eleventh slice").

Usage: symbol-order.py BINARY OUT DUMP [DUMP...]
       symbol-order.py --check BINARY FILE


Every function of BINARY that ran in the dumps is written to OUT by its mangled name, the
most executed first: the linker then places them side by side at the start of `.text`,
so a call touches a few dozen pages of code instead of hundreds spread over the binary.

With --check: how many of FILE's functions BINARY has and how much of `.text` they span
(the names carry hashes that change with the toolchain and the dependencies: a file
that no longer matches is ignored by the linker, and its calls run unordered); exits
with 1 when fewer than 90 % are found.
"""
import bisect
import collections
import importlib.util
import os
import subprocess
import sys


def load_parse():
    """`parse` of callgrind-costs.py (a file name with a dash: loaded by path)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "callgrind-costs.py")
    sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
    spec = importlib.util.spec_from_file_location("callgrind_costs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parse


def functions(binary):
    """(start, size, mangled name) of every function in BINARY, by address."""
    listing = subprocess.run(
        ["nm", "--defined-only", "-S", binary], capture_output=True, text=True, check=True
    ).stdout
    symbols = []
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "tTwW":
            symbols.append((int(fields[0], 16), int(fields[1], 16), fields[3]))
    return sorted(symbols)


def check(binary, listed):
    """Prints how many of the `listed` file's functions `binary` has, and their span."""
    names = [line.strip() for line in open(listed) if line.strip()]
    placed = {name: (start, size) for start, size, name in functions(binary)}
    found = [placed[name] for name in names if name in placed]
    span = max(s + n for s, n in found) - min(s for s, _ in found) if found else 0
    print(
        f"{listed}: {len(found)} of {len(names)} functions in {binary}, "
        f"spanning {span / 1024:.0f} KiB"
    )
    return len(found) >= 0.9 * len(names)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--check":
        sys.exit(0 if check(sys.argv[2], sys.argv[3]) else 1)
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    binary, out, dumps = sys.argv[1], sys.argv[2], sys.argv[3:]
    parse = load_parse()
    symbols = functions(binary)
    starts = [start for start, _, _ in symbols]
    cost = collections.Counter()
    for dump in dumps:
        _, executed, _ = parse(dump, os.path.basename(binary))
        if not executed:
            sys.exit(f"{dump}: no instruction addresses (run callgrind.sh with INSTR=1)")
        for addr, n in executed.items():
            i = bisect.bisect_right(starts, addr) - 1
            if i >= 0 and addr < symbols[i][0] + symbols[i][1]:
                cost[symbols[i][2]] += n
    with open(out, "w") as f:
        for name, _ in cost.most_common():
            f.write(name + "\n")
    size = {name: s for _, s, name in symbols}
    total = sum(size[name] for name in cost)
    print(f"{len(cost)} functions, {total / 1024:.0f} KiB, written to {out}")


if __name__ == "__main__":
    main()
