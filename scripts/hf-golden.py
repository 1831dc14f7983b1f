#!/usr/bin/env python3
"""Golden values from HF transformers for rooflab's CPU reference and GPU engine.

The engine's CPU reference must agree with HF transformers on the same checkpoint: the same
tokens, the same greedy continuation and logits within a named tolerance. This script runs
transformers on the CPU (float32 compute, eager attention) and writes what the Rust tests
compare against, plus the checks that tell an importer bug from bf16 rounding.

Subcommands
  golden      run prompts through an HF folder (--model DIR) or a GGUF file (--gguf FILE) and write
              the fixture JSON (--out), the last-position logit rows (--rows, safetensors, f32) and,
              for comparisons, every logit row of the run (--dump, safetensors, f32; large, not committed)
  compare     compare two `golden` runs (JSON + dumps): tokens, greedy ids, max |delta logit|
  tokenizers  encode varied strings with the folder's tokenizer and the GGUF's; report disagreements
  weights     per-tensor differences of one layer between the folder and the GGUF as transformers
              dequantises it (exact bf16 rounding, permutations, transposes)

Typical use (see results/golden/NOTES.md):
  python scripts/hf-golden.py golden --model models/SmolLM2-135M-Instruct \\
      --out tests/fixtures/smollm2_golden.json --rows tests/fixtures/smollm2_golden_rows.safetensors

Floats are stored as the exact value of the f32 (Python's repr of the widened double), so parsing
them as f32 or f64 gives back the bit-exact f32 logits. Log-sum-exps are computed in f64.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

# Rows sampled from the whole vocabulary besides the top-k: every SAMPLE_STRIDE-th token id.
SAMPLE_STRIDE = 97
TOP_K_LAST = 50
TOP_K_POSITION = 5
NEW_TOKENS = 20

PLAIN_PROMPTS = {
    "capital": "The capital of France is",
    "code": 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
}
CHAT_PROMPTS = {
    "chat": [{"role": "user", "content": "What is the capital of France?"}],
}

# Strings the two tokenizers must agree on: digits, unicode, code, whitespace, chat markup.
TOKENIZER_STRINGS = [
    "The capital of France is",
    "Hello, world!",
    "  leading and trailing spaces  ",
    "multiple    internal     spaces\tand\ttabs",
    "line one\nline two\n\nline four\n",
    "Mixed\r\nCRLF\r\nendings",
    "1234567890 3.14159 -42 1,000,000 007",
    "2024-11-24T11:15:00Z 0x1F 1e-5",
    "x  1   22\t3\n 4 abc123def  $ 5",
    "naïve café résumé façade Straße",
    "Ελληνικά, русский, 中文, 日本語, 한국어, العربية",
    "emoji 🦀🚀👍🏽 and a family 👩\u200d👩\u200d👧",
    "\u00a0non-breaking\u00a0space and zero\u200bwidth",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n",
    'fn main() { println!("{}", 1 << 3); }',
    "$$\\int_0^1 x^2\\,dx = \\frac{1}{3}$$",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after the end<|im_end|>",
    "HTTPS://Example.COM/path?q=a+b&x=%20#frag",
    "don't won't it's I'm we'll they've Y'ALL",
    "ALL CAPS SHOUTING, camelCaseIdentifiers and snake_case_names",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "",
]


def f32(x) -> float:
    """The exact value of an f32 as a Python float (json writes its shortest round-trip repr)."""
    return float(np.float32(x))


def to_json(value, indent: int = 0) -> str:
    """JSON with objects indented and arrays of scalars (or of scalar pairs) on one line, so the
    fixture stays small and still diffs line by line."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {to_json(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        items = [inner + to_json(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict:
    import safetensors
    import tokenizers
    import transformers

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import gguf

        out["gguf"] = getattr(gguf, "__version__", None) or _dist_version("gguf")
    except ImportError:
        pass
    return out


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def load(model_dir: str | None, gguf_file: str | None):
    """Tokenizer and model from an HF folder or a GGUF file, float32 compute, eager attention."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (model_dir is None) == (gguf_file is None):
        sys.exit("give exactly one of --model DIR or --gguf FILE")
    kwargs = {"dtype": torch.float32, "attn_implementation": "eager"}
    if gguf_file is not None:
        path = Path(gguf_file)
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, **kwargs)
        source = {"kind": "gguf", "path": str(path), "sha256": sha256_of(path)}
    else:
        path = Path(model_dir)
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        weights = sorted(path.glob("*.safetensors"))
        source = {
            "kind": "hf-folder",
            "path": str(path),
            "safetensors_sha256": {w.name: sha256_of(w) for w in weights},
            "weight_dtypes": _folder_dtypes(weights),
        }
    model.eval()
    return tok, model, source


def _folder_dtypes(weights: list[Path]) -> dict:
    from safetensors import safe_open

    counts: dict[str, int] = {}
    for w in weights:
        with safe_open(w, "pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                dtype = str(f.get_slice(name).get_dtype())
                counts[dtype] = counts.get(dtype, 0) + 1
    return counts


def build_prompts(tok) -> list[dict]:
    """Every prompt with its exact text and token ids from this source's tokenizer."""
    prompts = []
    for name, text in PLAIN_PROMPTS.items():
        ids = tok(text, add_special_tokens=True)["input_ids"]
        plain_ids = tok(text, add_special_tokens=False)["input_ids"]
        prompts.append(
            {
                "name": name,
                "kind": "plain",
                "text": text,
                "add_special_tokens": True,
                "special_tokens_added": ids != plain_ids,
                "ids": ids,
            }
        )
    for name, messages in CHAT_PROMPTS.items():
        if not tok.chat_template:
            print(f"warning: the tokenizer has no chat template; skipping prompt {name!r}", file=sys.stderr)
            continue
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # The rendered template already holds its special tokens; HF's own tokenize=True path
        # encodes it with add_special_tokens=False too.
        ids = tok(text, add_special_tokens=False)["input_ids"]
        prompts.append(
            {
                "name": name,
                "kind": "chat",
                "messages": messages,
                "add_generation_prompt": True,
                "text": text,
                "add_special_tokens": False,
                "ids": ids,
            }
        )
    return prompts


def row_summary(row: torch.Tensor, k: int) -> dict:
    """Top-k (id, logit), argmax and f64 log-sum-exp of one f32 logit row."""
    values, ids = torch.topk(row, k)
    return {
        "argmax": int(torch.argmax(row)),
        "top": [[int(i), f32(v)] for i, v in zip(ids.tolist(), values.tolist())],
        "logsumexp": float(torch.logsumexp(row.double(), 0)),
    }


@torch.no_grad()
def run_prompt(model, tok, prompt: dict, new_tokens: int) -> tuple[dict, torch.Tensor]:
    """Prefill, then `new_tokens` greedy steps with the KV cache, never stopping at EOS.

    Returns the JSON record and every logit row computed ([prompt_len + new_tokens - 1, vocab]).
    """
    ids = torch.tensor([prompt["ids"]], dtype=torch.long)
    out = model(input_ids=ids, use_cache=True)
    prompt_rows = out.logits[0].float()
    past = out.past_key_values
    rows = [prompt_rows]
    row = prompt_rows[-1]
    steps, generated = [], []
    for step in range(new_tokens):
        top2 = torch.topk(row, 2)
        chosen = int(top2.indices[0])
        steps.append(
            {
                "id": chosen,
                "logit": f32(top2.values[0]),
                "runner_up": int(top2.indices[1]),
                "margin": f32(top2.values[0] - top2.values[1]),
                "logsumexp": float(torch.logsumexp(row.double(), 0)),
            }
        )
        generated.append(chosen)
        if step + 1 == new_tokens:
            break
        out = model(input_ids=torch.tensor([[chosen]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        row = out.logits[0, -1].float()
        rows.append(row[None])

    eos = model.config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    first_eos = next((i for i, t in enumerate(generated) if t in eos_ids), None)
    last = prompt_rows[-1]
    record = dict(prompt)
    record["positions"] = [row_summary(prompt_rows[p], TOP_K_POSITION) for p in range(len(prompt["ids"]))]
    record["last"] = {
        **row_summary(last, TOP_K_LAST),
        "every_97th": [[i, f32(last[i])] for i in range(0, last.numel(), SAMPLE_STRIDE)],
    }
    record["greedy"] = {
        "ids": generated,
        "text": tok.decode(generated, skip_special_tokens=False),
        "full_text": tok.decode(prompt["ids"] + generated, skip_special_tokens=False),
        "first_eos_index": first_eos,
        "matches_generate": matches_generate(model, prompt["ids"], generated, eos_ids),
        "steps": steps,
    }
    return record, torch.cat(rows, 0)


@torch.no_grad()
def matches_generate(model, prompt_ids: list[int], generated: list[int], eos_ids: set) -> bool:
    """Does transformers' own greedy `generate` give the same tokens (up to its EOS stop)?"""
    from transformers import GenerationConfig

    eos = sorted(eos_ids)
    config = GenerationConfig(
        do_sample=False, max_new_tokens=len(generated), eos_token_id=eos, pad_token_id=eos[0], num_beams=1
    )
    out = model.generate(torch.tensor([prompt_ids]), generation_config=config)
    theirs = out[0, len(prompt_ids) :].tolist()
    return theirs == generated[: len(theirs)]


def cmd_golden(args) -> None:
    torch.manual_seed(0)
    tok, model, source = load(args.model, args.gguf)
    config = model.config
    prompts = build_prompts(tok)
    records, dump, rows = [], {}, {}
    for prompt in prompts:
        record, all_rows = run_prompt(model, tok, prompt, args.new_tokens)
        records.append(record)
        n = len(prompt["ids"])
        dump[f"{prompt['name']}.prompt_logits"] = all_rows[:n].contiguous().numpy()
        dump[f"{prompt['name']}.step_logits"] = all_rows[n - 1 :].contiguous().numpy()
        rows[f"{prompt['name']}.last_logits"] = all_rows[n - 1].contiguous().numpy()
        top = record["last"]["top"][:5]
        print(f"[{prompt['name']}] ids={prompt['ids']}")
        print(f"  top-5 after prompt: {[(tok.decode([i]), i, round(v, 4)) for i, v in top]}")
        print(f"  greedy: {record['greedy']['text']!r}")

    fixture = {
        "about": "HF transformers golden values for rooflab (scripts/hf-golden.py; see results/golden/NOTES.md)",
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(sys.argv),
        "versions": versions(),
        "source": source,
        "compute": {"dtype": "float32", "attn_implementation": "eager", "device": "cpu"},
        "model": {
            "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads,
            "num_key_value_heads": config.num_key_value_heads,
            "rms_norm_eps": config.rms_norm_eps,
            "tie_word_embeddings": config.tie_word_embeddings,
        },
        "tokenizer": {
            "bos": [tok.bos_token, tok.bos_token_id],
            "eos": [tok.eos_token, tok.eos_token_id],
            "chat_template": tok.chat_template,
        },
        "layout": {
            "positions": f"per prompt position: argmax, top-{TOP_K_POSITION} [id, logit], logsumexp (f64)",
            "last": f"last prompt position: top-{TOP_K_LAST} [id, logit], every {SAMPLE_STRIDE}th id [id, logit]"
            " from 0, logsumexp (f64); the full row is in the rows safetensors file",
            "greedy": f"{args.new_tokens} argmax steps with the KV cache, not stopped at EOS; "
            "steps[i].margin = top1 - top2 logit",
        },
        "rows_file": Path(args.rows).name if args.rows else None,
        "prompts": records,
        "tokenizer_cases": [
            {"text": s, "ids": tok(s, add_special_tokens=False)["input_ids"]} for s in TOKENIZER_STRINGS
        ],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(to_json(fixture) + "\n")
    print(f"wrote {args.out}")

    from safetensors.numpy import save_file

    meta = {"source_kind": source["kind"], "source_path": source["path"], "created": fixture["created"]}
    if args.rows:
        save_file(rows, args.rows, metadata=meta)
        print(f"wrote {args.rows}")
    if args.dump:
        save_file(dump, args.dump, metadata=meta)
        print(f"wrote {args.dump}")


def cmd_compare(args) -> None:
    from safetensors.numpy import load_file

    a, b = json.loads(Path(args.a).read_text()), json.loads(Path(args.b).read_text())
    da = load_file(args.dump_a) if args.dump_a else None
    db = load_file(args.dump_b) if args.dump_b else None
    print(f"A: {a['source']['kind']} {a['source']['path']}")
    print(f"B: {b['source']['kind']} {b['source']['path']}")
    pb = {p["name"]: p for p in b["prompts"]}
    for p in a["prompts"]:
        q = pb.get(p["name"])
        if q is None:
            print(f"[{p['name']}] missing from B")
            continue
        print(f"[{p['name']}]")
        print(
            f"  prompt ids equal: {p['ids'] == q['ids']}"
            + ("" if p["ids"] == q["ids"] else f" A={p['ids']} B={q['ids']}")
        )
        ga, gb = p["greedy"]["ids"], q["greedy"]["ids"]
        same = next((i for i, (x, y) in enumerate(zip(ga, gb)) if x != y), None)
        print(f"  greedy equal: {ga == gb}" + ("" if same is None else f" (first difference at step {same})"))
        print(f"  A greedy: {p['greedy']['text']!r}")
        print(f"  B greedy: {q['greedy']['text']!r}")
        print(f"  A top-5: {[(i, round(v, 4)) for i, v in p['last']['top'][:5]]}")
        print(f"  B top-5: {[(i, round(v, 4)) for i, v in q['last']['top'][:5]]}")
        if da is not None and db is not None and p["ids"] == q["ids"]:
            key = f"{p['name']}.prompt_logits"
            delta = np.abs(da[key] - db[key])
            per_pos = delta.max(axis=1)
            print(f"  max |dlogit| over every prompt position and the whole vocab: {delta.max():.5f}")
            print(f"    per position: {[round(float(x), 4) for x in per_pos]}")
            print(f"    mean |dlogit|: {delta.mean():.5f}; logit range A: [{da[key].min():.2f}, {da[key].max():.2f}]")
            if ga == gb:
                key = f"{p['name']}.step_logits"
                delta = np.abs(da[key] - db[key])
                print(f"  max |dlogit| over the greedy steps (same tokens fed): {delta.max():.5f}")
            ma = [s["margin"] for s in p["greedy"]["steps"]]
            print(f"  smallest greedy margin A: {min(ma):.4f} at step {int(np.argmin(ma))}")


def digit_split_encoder(tok):
    """The GGUF's vocabulary with llama.cpp's `smollm` pre-tokenizer: every digit split off first,
    then the GPT-2 regex. transformers' GGUF converter keeps only the byte-level GPT-2 split, which
    differs where whitespace runs precede a digit."""
    import copy

    from tokenizers import pre_tokenizers

    backend = copy.deepcopy(tok.backend_tokenizer)
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    return lambda s: backend.encode(s, add_special_tokens=False).ids


def cmd_tokenizers(args) -> None:
    from transformers import AutoTokenizer

    folder = AutoTokenizer.from_pretrained(args.model)
    path = Path(args.gguf)
    gguf = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    llama_cpp = digit_split_encoder(gguf)
    agree = agree_cpp = 0
    for s in TOKENIZER_STRINGS:
        for special in (False, True):
            x = folder(s, add_special_tokens=special)["input_ids"]
            y = gguf(s, add_special_tokens=special)["input_ids"]
            ok = x == y
            agree += ok
            if not ok or args.verbose:
                print(f"{'ok ' if ok else 'DIFF'} special={special} {s!r}\n  folder: {x}\n  gguf:   {y}")
        x = folder(s, add_special_tokens=False)["input_ids"]
        z = llama_cpp(s)
        agree_cpp += x == z
        if x != z:
            print(f"differs from the digit-split (llama.cpp smollm) encoding: {s!r}\n  folder: {x}\n  split:  {z}")
    total = 2 * len(TOKENIZER_STRINGS)
    print(
        f"tokenizers agree on {agree}/{total} encodings ({len(TOKENIZER_STRINGS)} strings, with and without specials)"
    )
    print(f"folder agrees with the digit-split encoding on {agree_cpp}/{len(TOKENIZER_STRINGS)} strings")
    for attr in ("bos_token", "eos_token", "unk_token", "pad_token"):
        print(f"{attr}: folder {getattr(folder, attr)!r} gguf {getattr(gguf, attr)!r}")
    print(f"vocab size: folder {len(folder)} gguf {len(gguf)}")
    vf, vg = folder.get_vocab(), gguf.get_vocab()
    print(f"vocab identical: {vf == vg}")
    print(f"chat template identical: {folder.chat_template == gguf.chat_template}")
    for s in TOKENIZER_STRINGS:
        ids = folder(s, add_special_tokens=False)["input_ids"]
        if folder.decode(ids) != gguf.decode(ids):
            print(f"decode differs for {s!r}")


def cmd_weights(args) -> None:
    from transformers import AutoModelForCausalLM

    folder_model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    heads = {"q_proj": folder_model.config.num_attention_heads, "k_proj": folder_model.config.num_key_value_heads}
    folder = folder_model.state_dict()
    path = Path(args.gguf)
    gguf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).state_dict()
    prefix = f"model.layers.{args.layer}."
    names = [n for n in gguf if args.layer == "all" or n.startswith(prefix) or not n.startswith("model.layers.")]
    worst = 1.0
    print(f"{'tensor':50} {'shape':>14} {'max|d|':>10} {'max|w|':>8} {'bf16-exact':>10}  note")
    for name in names:
        g = gguf[name]
        f = folder.get(name)
        if f is None:
            print(f"{name:50} missing from the folder")
            continue
        if f.shape != g.shape:
            print(f"{name:50} shape folder {tuple(f.shape)} gguf {tuple(g.shape)}")
            continue
        rounded = g.to(torch.bfloat16).float()
        exact = (rounded == f).float().mean().item()
        d = (f - g).abs().max().item()
        note = ""
        if exact < 0.99 and f.dim() == 2:
            note = diagnose(f, g, name, heads)
        worst = min(worst, exact)
        if args.layer != "all" or exact < 1.0:
            print(f"{name:50} {tuple(f.shape)!s:>14} {d:10.3e} {g.abs().max().item():8.4f} {exact:10.4%}  {note}")
    print(f"{len(names)} tensors compared; smallest fraction equal to bf16(gguf): {worst:.4%}")


def diagnose(f: torch.Tensor, g: torch.Tensor, name: str, heads: dict) -> str:
    """Names a layout mistake that explains a mismatch: llama.cpp's q/k row permutation, a transpose."""
    for key, n_head in heads.items():
        if key in name:
            rows = f.shape[0]
            half = rows // n_head // 2
            # llama.cpp's converter interleaves the two rotary halves of each head.
            permuted = g.reshape(n_head, half, 2, -1).transpose(1, 2).reshape(rows, -1)
            unpermuted = g.reshape(n_head, 2, half, -1).transpose(1, 2).reshape(rows, -1)
            for label, cand in (("gguf rows permuted", permuted), ("gguf rows un-permuted", unpermuted)):
                if (cand.to(torch.bfloat16).float() == f).float().mean() > 0.99:
                    return f"folder equals {label} (rotary layout)"
    if f.shape[0] == f.shape[1] and (g.t().to(torch.bfloat16).float() == f).float().mean() > 0.99:
        return "folder is the transpose"
    return "unexplained"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)

    golden = sub.add_parser("golden", help="run the prompts and write the fixture")
    golden.add_argument("--model", help="HF folder (config.json, tokenizer.json, *.safetensors)")
    golden.add_argument("--gguf", help="GGUF file, loaded and dequantised by transformers")
    golden.add_argument("--out", required=True, help="fixture JSON")
    golden.add_argument("--rows", help="safetensors with the full f32 last-prompt-position logit row per prompt")
    golden.add_argument("--dump", help="safetensors with every logit row (prompt positions and greedy steps)")
    golden.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    golden.set_defaults(func=cmd_golden)

    compare = sub.add_parser("compare", help="compare two golden runs")
    compare.add_argument("a")
    compare.add_argument("b")
    compare.add_argument("--dump-a")
    compare.add_argument("--dump-b")
    compare.set_defaults(func=cmd_compare)

    toks = sub.add_parser("tokenizers", help="folder tokenizer vs GGUF tokenizer on varied strings")
    toks.add_argument("--model", required=True)
    toks.add_argument("--gguf", required=True)
    toks.add_argument("--verbose", action="store_true")
    toks.set_defaults(func=cmd_tokenizers)

    weights = sub.add_parser("weights", help="folder weights vs GGUF weights, one layer")
    weights.add_argument("--model", required=True)
    weights.add_argument("--gguf", required=True)
    weights.add_argument("--layer", default="0", help="layer index, or `all` for every tensor")
    weights.set_defaults(func=cmd_weights)

    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
