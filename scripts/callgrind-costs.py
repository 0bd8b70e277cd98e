#!/usr/bin/env python3
"""What a proxied call costs besides its instructions, from a callgrind dump that
scripts/callgrind.sh made with CACHE=1 or ATOMICS=1 (BENCHMARKS.md, "#24, seventh slice").

Usage: callgrind-costs.py DUMP CALLS BINARY [TOP]

- With cache and branch simulation in the dump (CACHE=1): simulated L1 instruction and data
  misses and mispredicted branches per call.
- With instruction addresses in the dump (ATOMICS=1): atomic read-modify-write instructions
  (`lock`-prefixed, and `xchg` with memory) executed per call, in all and by function (the
  TOP most, default 25). BINARY is disassembled with objdump to find them.
"""
import collections
import re
import subprocess
import sys


def parse(path, binary_name):
    """Totals by event, and executions by instruction address (in BINARY) with the
    function each belongs to."""
    events, totals = [], []
    executed = collections.Counter()
    function_of = {}
    names, objects = {}, {}
    function = obj = None
    last_addr = 0
    call_cost_line = False
    with_addresses = False

    def named(table, line, key):
        m = re.match(key + r"=\((\d+)\)(?: (.*))?", line)
        if m.group(2):
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1))

    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("positions:"):
            with_addresses = "instr" in line.split()[1:]
        elif line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith(("summary:", "totals:")):
            totals = [int(x) for x in line.split()[1:]]
        elif line.startswith("ob="):
            obj = named(objects, line, "ob")
        elif line.startswith("cob="):
            named(objects, line, "cob")
        elif line.startswith("fn="):
            function = named(names, line, "fn")
        elif line.startswith("cfn="):
            named(names, line, "cfn")
        elif line.startswith("calls="):
            call_cost_line = True  # the next cost line is the call's, not its own
        elif with_addresses and line and line[0] in "0123456789+-*":
            fields = line.split()
            first = fields[0]
            if first.startswith("0x"):
                addr = int(first, 16)
            elif first[0] == "+":
                addr = last_addr + int(first[1:])
            elif first[0] == "-":
                addr = last_addr - int(first[1:])
            elif first == "*":
                addr = last_addr
            else:
                addr = int(first)
            last_addr = addr
            if call_cost_line:
                call_cost_line = False
                continue
            if obj and obj.endswith("/" + binary_name) and len(fields) > 2:
                executed[addr] += int(fields[2])  # Ir, the first event
                function_of[addr] = function
    return dict(zip(events, totals)), executed, function_of


def atomics(binary, executed, function_of):
    """Executions of atomic read-modify-write instructions, by kind and by function."""
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", binary],
        capture_output=True, text=True, check=True,
    ).stdout
    kinds, functions = collections.Counter(), collections.Counter()
    for line in listing.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(\S+)\s*(\S*)", line)
        if not m:
            continue
        addr, mnemonic, operands = int(m.group(1), 16), m.group(2), m.group(3)
        if addr not in executed:
            continue
        if mnemonic == "lock":
            kind = "lock " + operands  # the instruction after the prefix
        elif mnemonic.startswith("xchg") and "(" in operands:
            kind = "xchg"
        else:
            continue
        kinds[kind] += executed[addr]
        functions[function_of[addr]] += executed[addr]
    return kinds, functions


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    dump, calls, binary = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 25
    totals, executed, function_of = parse(dump, binary.rsplit("/", 1)[-1])
    if "I1mr" in totals:
        per = {k: v / calls for k, v in totals.items()}
        print(
            f"simulated per call: L1i misses {per['I1mr']:,.0f}, "
            f"L1d misses {per['D1mr'] + per['D1mw']:,.0f}, "
            f"mispredicted branches {per.get('Bcm', 0) + per.get('Bim', 0):,.0f}"
        )
    if executed:
        kinds, functions = atomics(binary, executed, function_of)
        print(f"atomic read-modify-writes per call: {sum(kinds.values()) / calls:.1f}")
        for kind, n in kinds.most_common():
            print(f"  {n / calls:7.1f}  {kind}")
        print("by function:")
        for function, n in functions.most_common(top):
            print(f"  {n / calls:7.1f}  {str(function)[:150]}")


if __name__ == "__main__":
    main()
