"""Shared pieces of the PyTorch peer scripts (peers_attention.py, peers_gemv.py, peers_e2e.py).

Each peer script times the same shapes as `rooflab bench` and writes peers_<name>.json, which
`rooflab report <run folder>` merges into summary.csv and the report. Timing follows the Rust side:
CUDA events around every launch, warm-up first, inputs rotated through enough copies to exceed L2,
median and 10th/90th percentiles with linear interpolation (numpy's default).

Two options exist to rehearse the scripts where GPU time is scarce or absent; neither changes what a
plain run does on the GPU:
  --device cpu  runs on the CPU with wall-clock timing (header "gpu": "cpu"): every code path but the
                CUDA calls, on a machine without a GPU. The numbers mean nothing.
  --smoke       tiny shapes (the same kernels, dtypes and flags; sizes capped by SMOKE_CAPS) and a few
                launches, written to smoke_peers_<name>.json unless --out says otherwise: that name
                does not start with "peers", so `rooflab report` never merges a smoke file.

This file is a module, not a script: running it only prints what it is.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_SHAPES = HERE / "shapes"
DEVICES = ["cuda", "cpu"]
# --smoke caps every size parameter at these values; head counts, head_dim, the int4 group and the
# flags stay as they are, so GQA, causal masks and the int4 layout still take their real code paths.
SMOKE_CAPS = {"B": 2, "S": 64, "L": 256, "M": 4, "N": 256, "K": 256, "prompt": 8, "gen": 4}


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
        help="shape files written by rooflab (default: <run>/shapes/<suite>.json of the suites the run "
        "measured, when --run or a run folder of this GPU is found, else harness/peers/shapes/<suite>.json); "
        f"suites: {', '.join(suites)}",
    )
    parser.add_argument("--run", type=Path, help="rooflab run folder (results/<device>/<date>-<commit>)")
    parser.add_argument(
        "--suites",
        help="comma-separated: time only these of the script's suites (default: all it serves); the rows "
        "an earlier run of the script wrote to the same file for its other suites are kept",
    )
    parser.add_argument("--out", type=Path, help="output JSON (default: <run>/peers_<name>.json)")
    parser.add_argument("--warmup", type=int, default=25, help="untimed launches first")
    parser.add_argument("--iters", type=int, default=200, help="timed launches")
    parser.add_argument("--quick", action="store_true", help="fewer launches (5 warm-up, 20 timed)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N cases per file (0 = all)")
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="cuda",
        help="cuda (the measurement) or cpu (rehearses every code path without a GPU; numbers meaningless)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny shapes and a few launches (every code path in seconds); writes smoke_peers_<name>.json "
        "unless --out, which `rooflab report` never merges",
    )
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


def selected_suites(args, suites):
    """The script's suites that --suites names (all of them without it), in the script's order."""
    if not args.suites:
        return list(suites)
    wanted = [s.strip() for s in args.suites.split(",") if s.strip()]
    if "all" in wanted:
        return list(suites)
    return [s for s in suites if s in wanted]


def resolve_paths(args, name, suites, doc):
    """Shape files to read and the JSON to write, following the defaults in common_args. Records in
    doc["suites"] which suites this call times (write_json keeps an earlier file's rows of the others)."""
    if args.run and not args.run.is_dir():
        sys.exit(f"--run {args.run}: not a folder (expected results/<device>/<date>-<commit>)")
    suites = selected_suites(args, suites)
    if not suites:
        print(f"--suites {args.suites}: {name} peers serve none of them; nothing to time", file=sys.stderr)
        sys.exit(0)
    doc["suites"] = suites
    run_dir = args.run or find_run_dir(doc["gpu"])
    run_shapes = run_dir / "shapes" if run_dir else None
    if args.shapes:
        shape_files = list(args.shapes)
    elif run_shapes and run_shapes.is_dir():
        # The run's own shapes, and only the suites it measured: a `--suite decode` run gets decode peers
        # alone, not the attention suite's from harness/peers/shapes.
        shape_files = [run_shapes / f"{suite}.json" for suite in suites if (run_shapes / f"{suite}.json").is_file()]
        if not shape_files:
            print(f"{run_dir} measured none of {', '.join(suites)}: no peers to time", file=sys.stderr)
            sys.exit(0)
    else:
        shape_files = [DEFAULT_SHAPES / f"{suite}.json" for suite in suites]
    file_name = f"smoke_peers_{name}.json" if args.smoke else f"peers_{name}.json"
    if args.out:
        out = args.out
    elif run_dir:
        out = run_dir / file_name
    else:
        out = Path(file_name)
    return shape_files, out


def smoke_case(case):
    """The case with its sizes capped at SMOKE_CAPS, and its shape string rewritten to match."""
    params = dict(case["params"])
    for key, cap in SMOKE_CAPS.items():
        if isinstance(params.get(key), int) and params[key] > cap:
            params[key] = cap
    words = []
    for word in case["shape"].split():
        key, eq, _ = word.partition("=")
        words.append(f"{key}={params[key]}" if eq and key in SMOKE_CAPS and key in params else word)
    return {**case, "params": params, "shape": " ".join(words)}


def load_cases(path, limit=0, smoke=False):
    """The cases of one shape file, each tagged with its suite; --smoke shrinks them and drops repeats."""
    doc = json.loads(Path(path).read_text())
    cases = doc.get("cases", [])
    for case in cases:
        case["suite"] = doc["suite"]
    if smoke:
        shrunk, seen = [], set()
        for case in map(smoke_case, cases):
            key = (case["kernel"], case["shape"], case["dtype"])
            if key not in seen:
                seen.add(key)
                shrunk.append(case)
        cases = shrunk
    return cases[:limit] if limit else cases


def l2_bytes(torch):
    props = torch.cuda.get_device_properties(0)
    return int(getattr(props, "L2_cache_size", 0) or 50 * 2**20)


def rotation_count(torch, bytes_per_set, device="cuda", cap=64):
    """Copies of the inputs so that the rotation exceeds twice the L2 (and fits in a quarter of free memory).

    On the CPU (a rehearsal, not a measurement) one copy."""
    if device != "cuda":
        return 1
    need = math.ceil(2 * l2_bytes(torch) / max(bytes_per_set, 1))
    free, _ = torch.cuda.mem_get_info()
    fit = max(1, int(free * 0.25 // max(bytes_per_set, 1)))
    return max(1, min(need, cap, fit))


def time_launches(torch, fn, inputs, warmup, iters, device="cuda"):
    """Times fn(*inputs[i % len(inputs)]) per launch, in µs: one pair of CUDA events per launch on the
    GPU, the wall clock around each (synchronous) call on the CPU."""
    for i in range(warmup):
        fn(*inputs[i % len(inputs)])
    if device != "cuda":
        times = []
        for i in range(iters):
            args = inputs[i % len(inputs)]
            start = time.perf_counter()
            fn(*args)
            times.append((time.perf_counter() - start) * 1e6)
        return times
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


def synchronize(torch, device):
    if device == "cuda":
        torch.cuda.synchronize()


def free_cached_memory(torch, device):
    """Returns the cached blocks of the last case to the driver, so a large case cannot starve the next."""
    if device == "cuda":
        torch.cuda.empty_cache()


def launches(args):
    if args.smoke:
        return (2, 5)
    return (5, 20) if args.quick else (args.warmup, args.iters)


def header(torch, script, args):
    """The top of every peer file; `rooflab report` refuses a file whose "gpu" differs from run.json's."""
    doc = {
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "script": script,
    }
    if args.smoke:
        doc["smoke"] = True
    return doc


def measure_cases(torch, args, shape_files, attempts):
    """Times every case of the shape files: `attempts(case)` yields (peer, measure) pairs, and measure()
    returns (times in µs, extra row fields). A peer that refuses a case (RuntimeError, TypeError) becomes a
    recorded skip and the others still run. Returns (rows, skipped) for the peer file."""
    rows, skipped = [], []
    for path in shape_files:
        for case in load_cases(path, args.limit, args.smoke):
            for peer, measure in attempts(case):
                label = f"{peer:18s} {case['dtype']:5s} {case['shape']:40s}"
                try:
                    times, extra = measure()
                except (RuntimeError, TypeError) as error:
                    reason = skip_reason(error)
                    skip = {"peer": peer, "dtype": case["dtype"], "shape": case["shape"], "reason": reason}
                    skipped.append({"suite": case["suite"], **skip})
                    print(f"skip {label.rstrip()}: {reason}", file=sys.stderr)
                    continue
                finally:
                    free_cached_memory(torch, args.device)
                row = {
                    "suite": case["suite"],
                    "kernel": case["kernel"],
                    "peer": peer,
                    "shape": case["shape"],
                    "dtype": case["dtype"],
                    **summarize(times),
                    **extra,
                }
                rows.append(row)
                print(f"{label} {row['median_us']:10.2f} us", flush=True)
    return rows, skipped


def finite_rows(doc):
    """Moves rows without a finite positive median to "skipped": `rooflab report` refuses a whole file for
    one such row, and JSON has no NaN (Python would write the bare word NaN, which no strict reader takes)."""
    rows = []
    for row in doc["rows"]:
        median = row.get("median_us")
        if isinstance(median, (int, float)) and math.isfinite(median) and median > 0:
            rows.append({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()})
        else:
            reason = f"median_us is {median}, not a positive time"
            doc.setdefault("skipped", []).append({"peer": row.get("peer"), "shape": row.get("shape"), "reason": reason})
    doc["rows"] = rows


def keep_earlier_rows(path, doc):
    """Adds to doc the rows and skips that the file at `path` holds for suites outside doc["suites"], when
    it was written by the same script on the same GPU: a call that times decode alone must not drop the
    attention rows an earlier call wrote into the same run folder."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    same_source = all(earlier.get(k) == doc.get(k) for k in ("gpu", "script", "smoke"))
    if not same_source or "suites" not in doc:
        return
    measured = set(doc["suites"])
    kept = [row for row in earlier.get("rows", []) if row.get("suite") not in measured]
    kept_skips = [skip for skip in earlier.get("skipped", []) if skip.get("suite", "") not in measured | {""}]
    if kept or kept_skips:
        print(f"kept {len(kept)} rows and {len(kept_skips)} skips of other suites from the earlier {path.name}")
    doc["rows"] = kept + doc["rows"]
    doc["skipped"] = kept_skips + doc.get("skipped", [])
    doc["suites"] = [s for s in earlier.get("suites", []) if s not in measured] + doc["suites"]


def write_json(path, doc):
    path = Path(path)
    keep_earlier_rows(path, doc)
    finite_rows(doc)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path} ({len(doc['rows'])} rows, {len(doc.get('skipped', []))} skipped)")


def import_torch_or_exit(script, device="cuda"):
    """torch (with a CUDA device when device is cuda), or a clean exit 0 (the GPU bundle runs every script
    blindly; scripts/gpu-run tells a skip from a result by whether the JSON was written)."""
    try:
        import torch
    except ImportError:
        print(f"{script}: torch is not installed; skipping", file=sys.stderr)
        sys.exit(0)
    if device == "cuda" and not torch.cuda.is_available():
        print(f"{script}: no CUDA device; skipping (--device cpu rehearses the script on the CPU)", file=sys.stderr)
        sys.exit(0)
    return torch


if __name__ == "__main__":
    print(__doc__.strip().splitlines()[0])
