#!/usr/bin/env python3
"""PyTorch SDPA peers for rooflab's attention kernels: prefill (suite attention) and decode (suite decode).

Times torch.nn.functional.scaled_dot_product_attention pinned to one backend at a time:
  torch_sdpa_flash  SDPBackend.FLASH_ATTENTION (FlashAttention-2 inside PyTorch)
  torch_sdpa_cudnn  SDPBackend.CUDNN_ATTENTION (cuDNN's fused attention)
GQA uses enable_gqa=True where the backend accepts it; otherwise K/V are expanded to every query head
before timing and the row says so ("kv_expanded": true), since the peer then reads more bytes.

Usage: python3 harness/peers/peers_attention.py [--run DIR | --shapes FILE...] [--out FILE] [--quick]
       [--smoke] [--device cpu]   (rehearsals; see peerlib.py)
On the CPU the cuDNN backend does not exist: its rows become recorded skips, as any refusal does.
"""

import peerlib

SCRIPT = "peers_attention.py"
SUITES = ["attention", "decode"]


def backends(torch):
    from torch.nn.attention import SDPBackend

    found = [("torch_sdpa_flash", SDPBackend.FLASH_ATTENTION)]
    if hasattr(SDPBackend, "CUDNN_ATTENTION"):
        found.append(("torch_sdpa_cudnn", SDPBackend.CUDNN_ATTENTION))
    return found


def make_inputs(torch, case, device):
    """q [B,H,Sq,D], k/v [B,KVH,Skv,D] bf16, one set per rotation slot."""
    p = case["params"]
    b, h, kvh, d = p["B"], p["H"], p["KVH"], p["D"]
    if case["suite"] == "decode":
        sq, skv = 1, p["L"]
    else:
        sq = skv = p["S"]
    bytes_per_set = 2 * (2 * b * h * sq * d + 2 * b * kvh * skv * d)
    count = peerlib.rotation_count(torch, bytes_per_set, device)
    sets = []
    for _ in range(count):
        q = torch.randn(b, h, sq, d, device=device, dtype=torch.bfloat16)
        k = torch.randn(b, kvh, skv, d, device=device, dtype=torch.bfloat16)
        v = torch.randn(b, kvh, skv, d, device=device, dtype=torch.bfloat16)
        sets.append((q, k, v))
    return sets


def expand_kv(sets, h):
    out = []
    for q, k, v in sets:
        group = h // k.shape[1]
        out.append((q, k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)))
    return out


def time_case(torch, case, backend, warmup, iters, device):
    """(times in µs, kv_expanded) for one case on one backend; raises when the backend refuses it."""
    from torch.nn.attention import sdpa_kernel

    sdpa = torch.nn.functional.scaled_dot_product_attention
    p = case["params"]
    causal = bool(p.get("causal", False)) and case["suite"] == "attention"
    gqa = p["KVH"] != p["H"]
    sets = make_inputs(torch, case, device)
    with sdpa_kernel([backend]):
        if gqa:
            try:

                def run(q, k, v):
                    return sdpa(q, k, v, is_causal=causal, enable_gqa=True)

                run(*sets[0])
                return peerlib.time_launches(torch, run, sets, warmup, iters, device), False
            except (RuntimeError, TypeError):
                sets = expand_kv(sets, p["H"])

        def run_plain(q, k, v):
            return sdpa(q, k, v, is_causal=causal)

        run_plain(*sets[0])
        return peerlib.time_launches(torch, run_plain, sets, warmup, iters, device), gqa


def main():
    args = peerlib.common_args(__doc__.splitlines()[0], SUITES).parse_args()
    torch = peerlib.import_torch_or_exit(SCRIPT, args.device)
    doc = peerlib.header(torch, SCRIPT, args)
    shape_files, out = peerlib.resolve_paths(args, "attention", SUITES, doc)
    warmup, iters = peerlib.launches(args)

    def attempts(case):
        for name, backend in backends(torch):

            def measure(backend=backend):
                times, expanded = time_case(torch, case, backend, warmup, iters, args.device)
                return times, {"kv_expanded": expanded}

            yield name, measure

    doc["rows"], doc["skipped"] = peerlib.measure_cases(torch, args, shape_files, attempts)
    peerlib.write_json(out, doc)


if __name__ == "__main__":
    main()
