#!/usr/bin/env python3
"""A linker script that places grpcproxy's hot functions side by side, from callgrind
dumps with instruction addresses (scripts/callgrind.sh with INSTR=1); release builds link
with it (grpcproxy-cli/build.rs; BENCHMARKS.md, "#24, eleventh slice").

Usage: symbol-order.py BINARY OUT DUMP [DUMP...]
       symbol-order.py --check BINARY SCRIPT

Every function of BINARY that ran in the dumps becomes a section pattern in OUT, the most
executed first, placed at the start of `.text` (the rest follows as the linker places it):
a call then touches a few dozen pages of code instead of hundreds spread over the binary. A
pattern is the function's section name with its hash left out (`...17h*`): the hash
changes with the features, the dependencies and the toolchain, the path does not; an
instance of a generic function with many instances is named whole (hash included), so
that the others are not pulled in with it.

With --check: how many of SCRIPT's patterns match a function of BINARY, and whether BINARY
was linked with it; exits with 1 when it was not, or when fewer than 90 % match (the call
path has moved on: run scripts/symbol-order.sh again).
"""
import bisect
import collections
import importlib.util
import os
import re
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


HASH = re.compile(r"17h[0-9a-f]{16}E(\.llvm\.\d+)?$")


def pattern(name, family):
    """The section pattern of function `name`: its legacy-mangled hash left out, unless
    the binary has more than three functions of that name (instances of a generic
    function: the one that ran is named whole, not all of them)."""
    key = HASH.sub("17h*", name)
    return key if family[key] <= 3 else name


def script(patterns):
    """The linker script: the patterns, in order, first in `.text` (the output section the
    linker then adds every other function to, as it would without the script). A
    function's code is in `.text.NAME`, or in `.text.unlikely.NAME` when it is marked
    cold (as `Once::call` and hashbrown's `reserve_rehash` are, which run on every call)."""
    lines = [
        "/* Written by scripts/symbol-order.sh: the functions a proxied call runs, most",
        "   executed first, placed side by side (grpcproxy-cli/build.rs). */",
        "SECTIONS {",
        "  .text : {",
    ]
    lines += [f"    *(.text.{p} .text.unlikely.{p})" for p in patterns]
    lines += ["  }", "}", "INSERT BEFORE .init;", ""]
    return "\n".join(lines)


def check(binary, path):
    """Prints how many of the script's patterns match a function of `binary`, and whether
    the script was linked in (the first function of `.text` is the first pattern's)."""
    patterns = re.findall(r"^\s*\*\(\.text\.(\S+) ", open(path).read(), re.MULTILINE)
    symbols = functions(binary)
    keys = {HASH.sub("17h*", name) for _, _, name in symbols}
    keys |= {name for _, _, name in symbols}  # the whole names too
    matched = sum(1 for p in patterns if p in keys)
    headers = subprocess.run(
        ["readelf", "-SW", binary], capture_output=True, text=True, check=True
    ).stdout
    text = int(re.search(r"\s\.text\s+PROGBITS\s+(\S+)", headers).group(1), 16)
    first = next((name for start, _, name in symbols if start >= text), "")
    linked = bool(patterns) and patterns[0] in (first, HASH.sub("17h*", first))
    print(
        f"{path}: {matched} of {len(patterns)} patterns match functions of {binary}; "
        f"linked in: {'yes' if linked else 'no'}"
    )
    return linked and matched >= 0.9 * len(patterns)


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
    # Every function that ran (those run rarely too: leaving them out measured worse);
    # names a linker script could misread (none, in Rust's manglings) are left out.
    plain = re.compile(r"^[A-Za-z0-9_$.]+$")
    names = [name for name, _ in cost.most_common() if plain.match(name)]
    family = collections.Counter(HASH.sub("17h*", name) for _, _, name in symbols)
    patterns = list(dict.fromkeys(pattern(name, family) for name in names))
    with open(out, "w") as f:
        f.write(script(patterns))
    size = {name: s for _, s, name in symbols}
    total = sum(size[name] for name in cost)
    print(f"{len(cost)} functions ({total / 1024:.0f} KiB), {len(patterns)} patterns, written to {out}")


if __name__ == "__main__":
    main()
