#!/usr/bin/env python3
"""PyTorch peers for rooflab's GEMV / skinny-GEMM kernels (suite gemv), y[M,N] = x[M,K]·W[N,K]ᵀ.

  cublas         bf16 rows: torch.nn.functional.linear (cuBLAS) on bf16 weights
  tinygemm_int4  int4 rows (group 128): torch._weight_int4pack_mm, the tinygemm kernel gpt-fast and
                 torchao use, where this torch has it
int8 rows have no peer here (torch has no weight-only int8 GEMV kernel of its own).

Usage: python3 harness/peers/peers_gemv.py [--run DIR | --shapes FILE...] [--out FILE] [--quick]
       [--smoke] [--device cpu]   (rehearsals; see peerlib.py)
"""

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


def time_bf16(torch, case, warmup, iters, device):
    """cuBLAS through torch.nn.functional.linear, in µs per launch."""
    p = case["params"]
    sets = bf16_sets(torch, p["M"], p["N"], p["K"], device)
    return peerlib.time_launches(torch, torch.nn.functional.linear, sets, warmup, iters, device)


def time_int4(torch, case, warmup, iters, device):
    """tinygemm's int4 kernel, in µs per launch; on the CPU rehearsal the CPU op of the same family (same
    arguments, its own packing)."""
    p = case["params"]
    op_name = "_weight_int4pack_mm" if device == "cuda" else "_weight_int4pack_mm_for_cpu"
    if not hasattr(torch, op_name):
        raise RuntimeError(f"this torch has no torch.{op_name}")
    op = getattr(torch, op_name)
    group = p.get("G", 128)
    sets = int4_sets(torch, p["M"], p["N"], p["K"], group, device)

    def run(x, w, sz):
        return op(x, w, group, sz)

    run(*sets[0])
    return peerlib.time_launches(torch, run, sets, warmup, iters, device)


# The peer of each dtype; int8 has none.
PEERS = {"bf16": ("cublas", time_bf16), "int4": ("tinygemm_int4", time_int4)}


def main():
    args = peerlib.common_args(__doc__.splitlines()[0], SUITES).parse_args()
    torch = peerlib.import_torch_or_exit(SCRIPT, args.device)
    doc = peerlib.header(torch, SCRIPT, args)
    shape_files, out = peerlib.resolve_paths(args, "gemv", SUITES, doc)
    warmup, iters = peerlib.launches(args)

    def attempts(case):
        if case["dtype"] in PEERS:
            name, time = PEERS[case["dtype"]]
            yield name, lambda: (time(torch, case, warmup, iters, args.device), {})

    doc["rows"], doc["skipped"] = peerlib.measure_cases(torch, args, shape_files, attempts)
    peerlib.write_json(out, doc)


if __name__ == "__main__":
    main()
