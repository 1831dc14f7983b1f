#!/usr/bin/env python3
"""Cross-checks `rooflab run-kernel attention-prefill` against PyTorch's scaled_dot_product_attention.

For a few shapes (GQA, head_dim 64 and 128, causal and not, a varlen batch, chunked prefill with a query
offset, bf16 and f16) it writes random q/k/v to a safetensors file, runs the rooflab binary on it, and
compares the `o` and `lse` it writes with SDPA on the same inputs (in float32, per sequence, with the
causal mask shifted by the query offset). Prints one line per case and exits 1 on any mismatch.

Usage (on the GPU machine): python3 harness/peers/check_run_kernel.py [--rooflab PATH] [--impl NAME]
(--impl all runs every implementation in turn.) --device cpu builds the inputs and the reference on the
CPU, to rehearse the script without a GPU (rooflab itself still needs one, so every case then fails).
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# (name, heads, kv_heads, head_dim, [(q_len, kv_len, q_offset)], causal, dtype)
CASES = [
    ("square gqa4 d128 causal", 32, 8, 128, [(1000, 1000, 0)], True, "bfloat16"),
    ("square mha d64 open", 8, 8, 64, [(257, 257, 0)], False, "bfloat16"),
    ("varlen gqa8 d128 causal", 16, 2, 128, [(33, 33, 0), (1, 1, 0), (300, 300, 0)], True, "bfloat16"),
    ("chunked prefill d128", 32, 8, 128, [(256, 1000, 744), (5, 65, 60)], True, "bfloat16"),
    ("f16 d64 causal", 9, 3, 64, [(129, 129, 0)], True, "float16"),
]


IMPLEMENTATIONS = ["flash", "flash-mma", "flash-wgmma", "tiled", "naive-row", "naive-materialised"]
# Seconds one `rooflab run-kernel` may take (a few at most when the kernel works: the PTX JIT and one launch).
RUN_TIMEOUT_S = 60


def find_binary(given):
    if given:
        return Path(given)
    # On the GPU machine scripts/gpu-run unpacks the bundled CLI under $TMPDIR (default /tmp).
    unpacked = Path(os.environ.get("TMPDIR", "/tmp")) / "rooflab-gpu-run/bin/rooflab"
    for candidate in [REPO / "target/release/rooflab", unpacked, REPO / "target/debug/rooflab"]:
        if candidate.exists():
            return candidate
    sys.exit("check_run_kernel: no rooflab binary found; pass --rooflab PATH")


def reference(torch, q, k, v, seqs, causal, scale):
    """SDPA per sequence in float32 (q [Tq,H,D], k/v [Tk,KVH,D]); returns (o [Tq,H,D], lse [H,Tq])."""
    F = torch.nn.functional
    h, kvh = q.shape[1], k.shape[1]
    outs, lses = [], []
    q0 = k0 = 0
    for q_len, kv_len, offset in seqs:
        qs = q[q0 : q0 + q_len].float().transpose(0, 1)  # [H, q, D]
        ks = k[k0 : k0 + kv_len].float().transpose(0, 1).repeat_interleave(h // kvh, dim=0)
        vs = v[k0 : k0 + kv_len].float().transpose(0, 1).repeat_interleave(h // kvh, dim=0)
        mask = None
        if causal:
            pos = torch.arange(q_len, device=q.device)[:, None] + offset
            mask = torch.arange(kv_len, device=q.device)[None, :] <= pos
        outs.append(F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, scale=scale).transpose(0, 1))
        scores = (qs @ ks.transpose(1, 2)) * scale
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        lses.append(torch.logsumexp(scores, dim=-1))
        q0, k0 = q0 + q_len, k0 + kv_len
    return torch.cat(outs, 0), torch.cat(lses, 1)


def run_case(torch, save_file, load_file, binary, impl, case, workdir, device):
    name, h, kvh, d, seqs, causal, dtype = case
    dt = getattr(torch, dtype)
    tq, tk = sum(s[0] for s in seqs), sum(s[1] for s in seqs)
    gen = torch.Generator(device=device).manual_seed(zlib.crc32(name.encode()))
    q = torch.randn(tq, h, d, device=device, generator=gen).to(dt)
    k = torch.randn(tk, kvh, d, device=device, generator=gen).to(dt)
    v = torch.randn(tk, kvh, d, device=device, generator=gen).to(dt)
    cu_q = torch.tensor([0] + [sum(s[0] for s in seqs[: i + 1]) for i in range(len(seqs))], dtype=torch.int32)
    cu_k = torch.tensor([0] + [sum(s[1] for s in seqs[: i + 1]) for i in range(len(seqs))], dtype=torch.int32)
    offsets = torch.tensor([s[2] for s in seqs], dtype=torch.int64)
    inputs, outputs = workdir / "in.safetensors", workdir / "out.safetensors"
    save_file(
        {"q": q.cpu(), "k": k.cpu(), "v": v.cpu(), "cu_seqlens_q": cu_q, "cu_seqlens_k": cu_k, "q_offsets": offsets},
        str(inputs),
    )
    command = [
        str(binary),
        "run-kernel",
        "attention-prefill",
        "--inputs",
        str(inputs),
        "--out",
        str(outputs),
        "--lse",
        "--impl",
        impl,
    ]
    if causal:
        command.append("--causal")
    try:
        # A kernel that hangs must not take the other implementations' checks with it.
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"FAIL {name}: rooflab run-kernel --impl {impl} did not finish in {RUN_TIMEOUT_S} s (a hung kernel?)")
        return False
    if result.returncode != 0:
        print(f"FAIL {name}: rooflab exited {result.returncode}: {result.stderr.strip()}")
        return False
    got = load_file(str(outputs))
    want_o, want_lse = reference(torch, q, k, v, seqs, causal, 1.0 / math.sqrt(d))
    o = got["o"].to(device).float()
    lse = got["lse"].to(device).float()
    rel = ((o - want_o).norm() / want_o.norm()).item()
    lse_err = (lse - want_lse).abs().max().item()
    ok = bool(torch.isfinite(o).all()) and rel < 2e-2 and lse_err < 1e-2
    print(f"{'ok  ' if ok else 'FAIL'} {name:28s} {impl}: rel err {rel:.2e}, max lse err {lse_err:.2e}")
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rooflab",
        help="path of the rooflab binary (default: target/release/rooflab, else the one scripts/gpu-run unpacked)",
    )
    parser.add_argument(
        "--impl", default="flash", help="flash, flash-mma, flash-wgmma, tiled, naive-row or naive-materialised"
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="where the inputs are made")
    args = parser.parse_args()
    import torch
    from safetensors.torch import load_file, save_file

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("check_run_kernel: torch sees no CUDA device (--device cpu rehearses the script without one)")
    binary = find_binary(args.rooflab)
    impls = IMPLEMENTATIONS if args.impl == "all" else [args.impl]
    if args.device == "cuda" and torch.cuda.get_device_capability()[0] != 9:
        impls = [i for i in impls if i != "flash-wgmma"]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for impl in impls:
            for case in CASES:
                ok &= run_case(torch, save_file, load_file, binary, impl, case, Path(tmp), args.device)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
