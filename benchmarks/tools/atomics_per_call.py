#!/usr/bin/env python3
"""Atomic read-modify-write instructions executed per call, by function.

Reads a callgrind profile recorded with --dump-instr=yes, disassembles every
object it names (objdump), and adds up the executions of lock-prefixed
instructions and of xchg with a memory operand (implicitly locked). Such an
instruction costs far more than its one count in an instruction total: it
drains the store buffer, and on a virtual machine it is 2-10 ns each.

  valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file=cg.mesh \\
      --toggle-collect='meshlib::runtime::EventLoop::Run()' \\
      bazel-bin/benchmarks/meshlib_echo_client --address=127.0.0.1:PORT --mesh \\
      --mode=throughput --duration=3s --warmup=0s
  benchmarks/tools/atomics_per_call.py cg.mesh CALLS   # CALLS: the client's count

Functions inlined into a caller are counted as that caller (the profile
knows only the function whose code the instruction sits in).
"""

import collections
import re
import subprocess
import sys


def parse_profile(path):
    """Returns {(object, address): executions} and {(object, address): function}."""
    names = {"ob": {}, "fn": {}}

    def name(kind, text):
        # Compressed names: "(N) name" defines N, "(N)" refers to it.
        m = re.match(r"\((\d+)\)(?: (.*))?", text)
        if not m:
            return text
        if m.group(2):
            names[kind][m.group(1)] = m.group(2)
        return names[kind].get(m.group(1), text)

    counts = collections.Counter()
    function_of = {}
    obj = fn = None
    after_calls = False  # the line after calls= is an inclusive call cost
    last = 0
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("ob="):
                obj = name("ob", line[3:])
                continue
            if line.startswith("fn="):
                fn = name("fn", line[3:])
                continue
            if line.startswith(("cob=", "cfn=")):
                name("ob" if line.startswith("cob") else "fn", line[4:])
                continue
            if line.startswith("calls="):
                after_calls = True
                continue
            if not line or line[0] not in "+-*0123456789":
                continue
            parts = line.split()
            pos = parts[0]
            if pos.startswith("0x"):
                addr = int(pos, 16)
            elif pos[0] in "+-":
                delta = int(pos[1:], 16) if pos[1:].startswith("0x") else int(pos[1:])
                addr = last + delta if pos[0] == "+" else last - delta
            elif pos == "*":
                addr = last
            else:
                continue
            last = addr
            if after_calls:
                after_calls = False
                continue
            if len(parts) >= 3:
                counts[(obj, addr)] += int(parts[2])
                function_of[(obj, addr)] = fn
    return counts, function_of


def locked_addresses(obj):
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", obj],
                         capture_output=True, text=True, check=False).stdout
    found = set()
    for line in out.splitlines():
        m = re.match(r"\s+([0-9a-f]+):\s+(.*)", line)
        if not m:
            continue
        ins = m.group(2)
        if ins.startswith("lock ") or (ins.startswith("xchg") and "(" in ins):
            found.add(int(m.group(1), 16))
    return found


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    counts, function_of = parse_profile(sys.argv[1])
    calls = int(sys.argv[2])
    total = 0
    by_function = collections.Counter()
    for obj in {o for o, _ in counts if o and o.startswith("/")}:
        locked = locked_addresses(obj)
        for (o, addr), n in counts.items():
            if o == obj and addr in locked:
                total += n
                by_function[function_of[(o, addr)]] += n
    print("atomic read-modify-writes per call: %.1f" % (total / calls))
    for fn, n in by_function.most_common(40):
        print("%7.2f  %s" % (n / calls, (fn or "?")[:140]))


if __name__ == "__main__":
    main()
