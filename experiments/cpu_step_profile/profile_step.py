"""Where a train step's time goes on XLA:CPU: a jax.profiler trace of one step, its ops joined with the HLO.

    python experiments/cpu_step_profile/profile_step.py --config=configs/t5_small.py \
        --overrides=train.batch_size=8,data.inputs_length=512,data.targets_length=114,model.dtype=float32 [--top=25]

Builds the step as lmx.bench does (experiments/cpu_step_profile/interleave.py's `build`), runs two untimed steps,
traces a third (perfetto JSON), then sums the duration of every op event by HLO instruction and classifies each
instruction from the optimized HLO (`compiled.as_text()`): dot-like (a dot, a convolution, or a fusion containing
one), copy/transpose, reduce, dynamic-update-slice, broadcast, other elementwise. Prints the op time by kind, the
`--top` instructions with their shapes, and the step's wall time.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax
from interleave import build


def instruction_kinds(hlo_text: str) -> dict[str, tuple[str, str]]:
    """HLO instruction name -> (kind, its result shape), for every instruction of the optimized module.

    Fusions are classified by what their fused computation contains (the computation is named in calls=).
    """
    computations: dict[str, list[str]] = {}
    current = None
    for line in hlo_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header and not line.startswith(" "):
            current = header.group(1)
            computations[current] = []
        elif current is not None and line.startswith(" "):
            computations[current].append(line)

    def opcode(line):
        m = re.search(r"= \S+ (\w[\w-]*)\(", line) or re.search(r"= \([^)]*\) (\w[\w-]*)\(", line)
        return m.group(1) if m else "?"

    def classify(comp_name, depth=0):
        ops = []
        for line in computations.get(comp_name, []):
            op = opcode(line)
            ops.append(op)
            called = re.search(r"calls=%?([\w.\-]+)", line)
            if called and depth < 3:
                ops.extend(classify(called.group(1), depth + 1))
        return ops

    kinds = {}
    for lines in computations.values():
        for line in lines:
            m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+|\([^=]*\)) ", line)
            if not m:
                continue
            name, shape = m.group(1), m.group(2)
            op = opcode(line)
            inner = [op]
            called = re.search(r"calls=%?([\w.\-]+)", line)
            if called:
                inner += classify(called.group(1))
            if "dot" in inner or "convolution" in inner:
                kind = "dot"
            elif op in ("copy", "transpose") or (op == "fusion" and set(inner) & {"transpose", "copy"}):
                kind = "copy/transpose"
            elif "reduce" in inner or "reduce-window" in inner:
                kind = "reduce"
            elif "dynamic-update-slice" in inner:
                kind = "dynamic-update-slice"
            elif op == "broadcast" or (
                op == "fusion" and set(inner) <= {"fusion", "broadcast", "parameter", "constant"}
            ):
                kind = "broadcast"
            elif op in ("while", "call", "conditional", "tuple", "get-tuple-element", "parameter", "constant"):
                kind = "control"
            else:
                kind = "elementwise/other"
            kinds[name] = (kind, shape)
    return kinds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--overrides", default="")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--hlo_out", default="", help="write the optimized HLO of the step to this file")
    args = parser.parse_args()

    v = build(args.config, args.overrides)
    hlo_text = v["step"].as_text()
    kinds = instruction_kinds(hlo_text)
    if args.hlo_out:
        with open(args.hlo_out, "w") as f:
            f.write(hlo_text)

    def one_step():
        with jax.set_mesh(v["run"].mesh):
            v["state"], metrics = v["step"](v["state"], v["batch"], v["run"].dropout_key)
            jax.block_until_ready((v["state"], metrics))

    one_step()
    one_step()
    trace_dir = tempfile.mkdtemp()
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        start = time.perf_counter()
        one_step()
        wall = time.perf_counter() - start
    (path,) = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events

    by_name = collections.Counter()
    count = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in kinds:
            by_name[e["name"]] += e["dur"] / 1e6
            count[e["name"]] += 1
    by_kind = collections.Counter()
    for name, seconds in by_name.items():
        by_kind[kinds[name][0]] += seconds
    total = sum(by_kind.values())
    print(f"step wall {wall:.2f} s; op time summed over threads {total:.2f} s")
    for kind, seconds in by_kind.most_common():
        print(f"  {kind:<22} {seconds:7.2f} s  {100 * seconds / total:5.1f}%")
    print(f"top {args.top} instructions:")
    for name, seconds in by_name.most_common(args.top):
        kind, shape = kinds[name]
        print(f"  {seconds:6.3f} s  x{count[name]:<3} {kind:<20} {name:<40} {shape[:80]}")


if __name__ == "__main__":
    main()
