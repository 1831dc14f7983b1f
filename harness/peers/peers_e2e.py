#!/usr/bin/env python3
"""HF transformers peer for rooflab's end-to-end suite (e2e): batch 1, greedy, on one model folder.

  prefill      time to first token: generate(max_new_tokens=1) on a fixed random prompt
  decode_step  time per generated token: (generate(gen tokens) - prefill) / (gen - 1), tokens/s beside it
The model folder is an HF folder (config.json + safetensors) or a folder holding one .gguf file
(transformers dequantises it on load). Rows carry `model=<folder name>`, as rooflab's do.

Usage: python3 harness/peers/peers_e2e.py --model DIR [--dtype bf16|f32] [--attn sdpa|eager]
       [--run DIR | --shapes FILE] [--out FILE] [--quick] [--smoke] [--device cpu]
Without --model it uses $ROOFLAB_MODEL, else the first folder under models/ holding a model, else skips.
--smoke without --model generates from a tiny random Llama (saved to a temporary folder and loaded back
the way a checkpoint is), so the rehearsal needs no checkpoint; --device cpu runs it on the CPU.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import peerlib

SCRIPT = "peers_e2e.py"
SUITES = ["e2e"]


def find_model(arg):
    """The model folder: --model (only that one when given), else $ROOFLAB_MODEL, else models/*."""
    if arg:
        candidates = [arg]
    else:
        candidates = [Path(os.environ["ROOFLAB_MODEL"])] if os.environ.get("ROOFLAB_MODEL") else []
        models = peerlib.REPO / "models"
        if models.is_dir():
            candidates.extend(sorted(p for p in models.iterdir() if p.is_dir()))
    for path in candidates:
        path = Path(path)
        if (path / "config.json").is_file() or any(path.glob("*.gguf")):
            return path
    return None


def write_tiny_random_llama(folder):
    """A 2-layer random Llama (GQA 4/2, vocab 512) saved as a checkpoint folder, for --smoke."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    LlamaForCausalLM(config).save_pretrained(str(folder))
    return folder


def dtype_keyword(transformers):
    """from_pretrained's dtype argument: `dtype` since transformers 4.56 (`torch_dtype` is deprecated
    there), `torch_dtype` before (older versions would take `dtype` as a config field and load f32)."""
    try:
        major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    except ValueError:
        return "dtype"
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def load_model(transformers, folder, dtype, attn, device):
    kwargs = {dtype_keyword(transformers): dtype, "attn_implementation": attn}
    ggufs = sorted(folder.glob("*.gguf"))
    if not (folder / "config.json").is_file() and ggufs:
        kwargs["gguf_file"] = ggufs[0].name
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), **kwargs).to(device).eval()
    return model


def generate_us(torch, model, prompt_ids, new_tokens, device):
    """Wall time of one greedy generate call producing exactly new_tokens tokens, µs."""
    peerlib.synchronize(torch, device)
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(
            prompt_ids,
            attention_mask=torch.ones_like(prompt_ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
    peerlib.synchronize(torch, device)
    return (time.perf_counter() - start) * 1e6


def main():
    parser = peerlib.common_args(__doc__.splitlines()[0], SUITES)
    parser.add_argument("--model", type=Path, help="model folder (HF or one .gguf)")
    parser.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    parser.add_argument("--attn", default="sdpa", help="transformers attn_implementation (sdpa, eager)")
    parser.add_argument("--repeats", type=int, default=5, help="timed generate calls per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="peers_e2e-") as scratch:
        run(args, Path(scratch))


def run(args, scratch):
    """Everything after argument parsing; `scratch` holds the tiny random model of --smoke."""
    tiny = args.smoke and not args.model
    folder = None if tiny else find_model(args.model)
    if folder is None and not tiny:
        where = args.model if args.model else "--model, $ROOFLAB_MODEL or models/*"
        print(f"{SCRIPT}: no model folder ({where}); skipping", file=sys.stderr)
        return
    torch = peerlib.import_torch_or_exit(SCRIPT, args.device)
    try:
        import transformers
    except ImportError:
        print(f"{SCRIPT}: transformers is not installed; skipping", file=sys.stderr)
        return
    if tiny:
        folder = write_tiny_random_llama(scratch / "tiny-random-llama")
    doc = peerlib.header(torch, SCRIPT, args)
    doc["transformers"] = transformers.__version__
    shape_files, out = peerlib.resolve_paths(args, "e2e", SUITES, doc)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model = load_model(transformers, folder, dtype, args.attn, args.device)
    vocab = int(model.config.vocab_size)
    repeats = 2 if args.quick or args.smoke else args.repeats
    generator = torch.Generator().manual_seed(0)
    rows = []
    measured = {}  # shape -> (ttft list, per-token list): prefill and decode_step share the generate calls
    for path in shape_files:
        for case in peerlib.load_cases(path, args.limit, args.smoke):
            p = case["params"]
            prompt_len, gen = int(p["prompt"]), int(p["gen"])
            shape = case["shape"].replace("{model}", folder.name)
            if shape not in measured:
                # Random ids away from the special tokens at both ends of most vocabularies.
                high = max(101, vocab - 100)
                prompt = torch.randint(100, high, (1, prompt_len), generator=generator).to(args.device)
                # Warm-up: allocations, kernels, caches.
                generate_us(torch, model, prompt, gen, args.device)
                ttft = [generate_us(torch, model, prompt, 1, args.device) for _ in range(repeats)]
                totals = [generate_us(torch, model, prompt, gen, args.device) for _ in range(repeats)]
                first = peerlib.summarize(ttft)["median_us"]
                per_token = [max(total - first, 1.0) / max(gen - 1, 1) for total in totals]
                measured[shape] = (ttft, per_token)
            ttft, per_token = measured[shape]
            common = {"suite": case["suite"], "peer": "hf_transformers", "shape": shape, "dtype": args.dtype}
            extra = {"attn_implementation": args.attn, "model_dtype": args.dtype}
            if case["kernel"] == "decode_step":
                stats = peerlib.summarize(per_token)
                stats["tokens_per_s"] = 1e6 / stats["median_us"]
            else:
                stats = peerlib.summarize(ttft)
            rows.append({**common, "kernel": case["kernel"], **stats, **extra})
            print(f"hf_transformers {case['kernel']:12s} {shape} {stats['median_us']:12.1f} us", flush=True)
    doc["model"] = folder.name
    doc["rows"] = rows
    peerlib.write_json(out, doc)


if __name__ == "__main__":
    main()
