"""Shared pieces of the PyTorch peer scripts (peers_attention.py, peers_gemv.py, peers_e2e.py).

Each peer script times the same shapes as `rooflab bench` and writes peers_<name>.json, which
`rooflab report <run folder>` merges into summary.csv and the report. Timing follows the Rust side:
CUDA events around every launch, warm-up first, inputs rotated through enough copies to exceed L2,
median and 10th/90th percentiles with linear interpolation (numpy's default).

This file is a module, not a script: running it only prints what it is.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_SHAPES = HERE / "shapes"


def quantile(sorted_values, q):
    """Linear-interpolated quantile of sorted values; the same rule as harness/src/bench/stats.rs."""
    if not sorted_values:
        return float("nan")
    position = min(max(q, 0.0), 1.0) * (len(sorted_values) - 1)
    below, above = math.floor(position), math.ceil(position)
    fraction = position - below
    return sorted_values[below] + (sorted_values[above] - sorted_values[below]) * fraction


def summarize(times_us):
    values = sorted(times_us)
    return {
        "median_us": quantile(values, 0.5),
        "p10_us": quantile(values, 0.1),
        "p90_us": quantile(values, 0.9),
        "samples": len(values),
    }


def common_args(description, suites):
    """Arguments every peer script takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--shapes",
        nargs="+",
        type=Path,
        help="shape files written by rooflab (default: <run>/shapes/<suite>.json when --run or a run "
        f"folder is found, else harness/peers/shapes/<suite>.json); suites: {', '.join(suites)}",
    )
    parser.add_argument("--run", type=Path, help="rooflab run folder (results/<device>/<date>-<commit>)")
    parser.add_argument("--out", type=Path, help="output JSON (default: <run>/peers_<name>.json)")
    parser.add_argument("--warmup", type=int, default=25, help="untimed launches first")
    parser.add_argument("--iters", type=int, default=200, help="timed launches")
    parser.add_argument("--quick", action="store_true", help="fewer launches (smoke run)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N cases per file (0 = all)")
    return parser


def find_run_dir(gpu_name):
    """The newest run folder under results/ measured on this GPU (by run.json date, then folder name)."""
    best = None
    for run_json in sorted((REPO / "results").glob("*/*/run.json")):
        try:
            run = json.loads(run_json.read_text())
        except (OSError, ValueError):
            continue
        if run.get("gpu", {}).get("name", "").strip() != gpu_name.strip():
            continue
        key = (run.get("date", ""), run_json.parent.name)
        if best is None or key > best[0]:
            best = (key, run_json.parent)
    return best[1] if best else None


def resolve_paths(args, name, suites, gpu_name):
    """Shape files to read and the JSON to write, following the defaults in common_args."""
    run_dir = args.run or find_run_dir(gpu_name)
    if args.shapes:
        shape_files = list(args.shapes)
    else:
        shape_files = []
        for suite in suites:
            in_run = run_dir / "shapes" / f"{suite}.json" if run_dir else None
            shape_files.append(in_run if in_run and in_run.is_file() else DEFAULT_SHAPES / f"{suite}.json")
    if args.out:
        out = args.out
    elif run_dir:
        out = run_dir / f"peers_{name}.json"
    else:
        out = Path(f"peers_{name}.json")
    return shape_files, out


def load_cases(path, limit=0):
    doc = json.loads(Path(path).read_text())
    cases = doc.get("cases", [])
    for case in cases:
        case["suite"] = doc["suite"]
    return cases[:limit] if limit else cases


def l2_bytes(torch):
    props = torch.cuda.get_device_properties(0)
    return int(getattr(props, "L2_cache_size", 0) or 50 * 2**20)


def rotation_count(torch, bytes_per_set, cap=64):
    """Copies of the inputs so that the rotation exceeds twice the L2 (and fits in a quarter of free memory)."""
    need = math.ceil(2 * l2_bytes(torch) / max(bytes_per_set, 1))
    free, _ = torch.cuda.mem_get_info()
    fit = max(1, int(free * 0.25 // max(bytes_per_set, 1)))
    return max(1, min(need, cap, fit))


def time_cuda(torch, fn, inputs, warmup, iters):
    """Times fn(*inputs[i % len(inputs)]) with one pair of CUDA events per launch; returns µs per launch."""
    for i in range(warmup):
        fn(*inputs[i % len(inputs)])
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        args = inputs[i % len(inputs)]
        starts[i].record()
        fn(*args)
        ends[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) * 1000.0 for s, e in zip(starts, ends)]


def skip_reason(error):
    """First line of an exception's message (its type when the message is empty), at most 200 characters."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def launches(args):
    return (5, 20) if args.quick else (args.warmup, args.iters)


def header(torch, script):
    return {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "script": script,
    }


def write_json(path, doc):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path} ({len(doc['rows'])} rows, {len(doc.get('skipped', []))} skipped)")


def import_torch_or_exit(script):
    """torch with a CUDA device, or a clean exit 0 (the GPU bundle runs every script blindly)."""
    try:
        import torch
    except ImportError:
        print(f"{script}: torch is not installed; skipping", file=sys.stderr)
        sys.exit(0)
    if not torch.cuda.is_available():
        print(f"{script}: no CUDA device; skipping", file=sys.stderr)
        sys.exit(0)
    return torch


if __name__ == "__main__":
    print(__doc__.strip().splitlines()[0])
