#!/usr/bin/env python3
"""PyTorch peers for rooflab's GEMV / skinny-GEMM kernels (suite gemv), y[M,N] = x[M,K]·W[N,K]ᵀ.

  cublas         bf16 rows: torch.nn.functional.linear (cuBLAS) on bf16 weights
  tinygemm_int4  int4 rows (group 128): torch._weight_int4pack_mm, the tinygemm kernel gpt-fast and
                 torchao use, where this torch has it
int8 rows have no peer here (torch has no weight-only int8 GEMV kernel of its own).

Usage: python3 harness/peers/peers_gemv.py [--run DIR | --shapes FILE...] [--out FILE] [--quick]
       [--smoke] [--device cpu]   (rehearsals; see peerlib.py)
"""

import sys

import peerlib

SCRIPT = "peers_gemv.py"
SUITES = ["gemv"]
INNER_K_TILES = 8


def bf16_sets(torch, m, n, k, device):
    bytes_per_set = 2 * (n * k + m * k)
    return [
        (torch.randn(m, k, device=device, dtype=torch.bfloat16), torch.randn(n, k, device=device, dtype=torch.bfloat16))
        for _ in range(peerlib.rotation_count(torch, bytes_per_set, device))
    ]


def pack_int4(torch, n, k, device):
    """Random 4-bit weights in tinygemm's layout; newer torch takes uint8 [N, K/2], older int32 [N, K]."""
    nibbles = torch.randint(0, 16, (n, k), device=device, dtype=torch.int32)
    if device == "cpu":
        # The CPU rehearsal: tinygemm's packing is CUDA-only; the CPU op of the same family takes int32 [N, K].
        return torch._convert_weight_to_int4pack_for_cpu(nibbles, INNER_K_TILES)
    packed_u8 = ((nibbles[:, ::2] << 4) | nibbles[:, 1::2]).to(torch.uint8)
    try:
        return torch._convert_weight_to_int4pack(packed_u8, INNER_K_TILES)
    except RuntimeError:
        return torch._convert_weight_to_int4pack(nibbles, INNER_K_TILES)


def int4_sets(torch, m, n, k, group, device):
    bytes_per_set = n * k // 2 + 2 * 2 * n * (k // group) + 2 * m * k
    sets = []
    for _ in range(peerlib.rotation_count(torch, bytes_per_set, device)):
        x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        scales_zeros = torch.randn(k // group, n, 2, device=device, dtype=torch.bfloat16) * 0.01
        sets.append((x, pack_int4(torch, n, k, device), scales_zeros))
    return sets


def time_case(torch, case, warmup, iters, device):
    """(peer name, times in µs) for one case, or None when no peer covers its dtype."""
    p = case["params"]
    m, n, k = p["M"], p["N"], p["K"]
    if case["dtype"] == "bf16":
        sets = bf16_sets(torch, m, n, k, device)
        return "cublas", peerlib.time_launches(torch, torch.nn.functional.linear, sets, warmup, iters, device)
    if case["dtype"] == "int4":
        # On the CPU rehearsal, the CPU op of the same family (same arguments, its own packing).
        op_name = "_weight_int4pack_mm" if device == "cuda" else "_weight_int4pack_mm_for_cpu"
        if not hasattr(torch, op_name):
            raise RuntimeError(f"this torch has no torch.{op_name}")
        op = getattr(torch, op_name)
        group = p.get("G", 128)
        sets = int4_sets(torch, m, n, k, group, device)

        def run(x, w, sz):
            return op(x, w, group, sz)

        run(*sets[0])
        return "tinygemm_int4", peerlib.time_launches(torch, run, sets, warmup, iters, device)
    return None


def main():
    args = peerlib.common_args(__doc__.splitlines()[0], SUITES).parse_args()
    torch = peerlib.import_torch_or_exit(SCRIPT, args.device)
    doc = peerlib.header(torch, SCRIPT, args)
    shape_files, out = peerlib.resolve_paths(args, "gemv", SUITES, doc["gpu"])
    warmup, iters = peerlib.launches(args)
    rows, skipped = [], []
    for path in shape_files:
        for case in peerlib.load_cases(path, args.limit, args.smoke):
            try:
                result = time_case(torch, case, warmup, iters, args.device)
            except (RuntimeError, TypeError) as error:
                reason = peerlib.skip_reason(error)
                skipped.append({"dtype": case["dtype"], "shape": case["shape"], "reason": reason})
                print(f"skip {case['dtype']} {case['shape']}: {reason}", file=sys.stderr)
                continue
            finally:
                peerlib.free_cached_memory(torch, args.device)
            if result is None:
                continue
            name, times = result
            row = {
                "suite": case["suite"],
                "kernel": case["kernel"],
                "peer": name,
                "shape": case["shape"],
                "dtype": case["dtype"],
                **peerlib.summarize(times),
            }
            rows.append(row)
            print(f"{name:14s} {case['dtype']:5s} {case['shape']:30s} {row['median_us']:10.2f} us", flush=True)
    doc["rows"] = rows
    doc["skipped"] = skipped
    peerlib.write_json(out, doc)


if __name__ == "__main__":
    main()
