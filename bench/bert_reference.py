#!/usr/bin/env python3
"""Reference sentence vectors for any BERT sentence-transformers folder (all-MiniLM-L6-v2,
bge-small-en-v1.5, e5-small-v2, gte-small, ...), to check trestle-embed against: BERT written
again here in float64 NumPy over the folder's model.safetensors, token ids from the folder's
tokenizer.json through the `tokenizers` package, then the pooling the folder's Pooling module
names (mean or [CLS]) and L2 normalization. The prompt config_sentence_transformers.json names
as `default_prompt_name` goes before each text, as sentence-transformers does.

    .venv/bin/python bench/bert_reference.py MODEL_DIR [--pooling cls|mean] [--prompt TEXT]
        [--components 5] [--rust FILE]

Prints, per sentence, the first components of its vector. With --rust FILE (the JSON that
`cargo run -p trestle-embed --example embed -- DIR < sentences` prints, one sentence a line as
listed in SENTENCES) it also prints the largest absolute difference and the cosine per
sentence, and exits 1 when a difference is 1e-4 or more. --pooling and --prompt override what
the folder says (the crate's tests use --pooling cls on all-MiniLM-L6-v2 to check the [CLS]
path on weights CI has). Needs numpy and tokenizers; uses scipy's erf when it is installed.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
from tokenizers import Tokenizer

try:
    from scipy.special import erf
except ImportError:  # pragma: no cover - slower, same numbers
    erf = np.vectorize(math.erf)

SENTENCES = [
    "How do I reset my password?",
    "I forgot my password, how can I change it?",
    "What is the capital of France?",
    "ok",
]


def read_json(path, default=None):
    if not os.path.isfile(path):
        return default
    with open(path) as f:
        return json.load(f)


def folder_pooling(directory):
    """'cls' or 'mean', from the Pooling module modules.json names (else 1_Pooling)."""
    folder = "1_Pooling"
    for module in read_json(os.path.join(directory, "modules.json"), []):
        if module.get("type", "").endswith(".Pooling") and module.get("path"):
            folder = module["path"]
    config = read_json(os.path.join(directory, folder, "config.json"), {})
    if "pooling_mode" in config:
        return config["pooling_mode"]
    on = sorted(k for k, v in config.items() if k.startswith("pooling_mode_") and v is True)
    if on in ([], ["pooling_mode_mean_tokens"]):
        return "mean"
    if on == ["pooling_mode_cls_token"]:
        return "cls"
    sys.exit(f"unsupported pooling: {on}")


def folder_prompt(directory):
    config = read_json(os.path.join(directory, "config_sentence_transformers.json"), {})
    name = config.get("default_prompt_name")
    return config.get("prompts", {}).get(name, "") if name else ""


def load_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    dtypes = {"F32": "<f4", "F16": "<f2", "BF16": None}
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] not in dtypes:
            continue
        start, end = info["data_offsets"]
        raw = data[start:end]
        if info["dtype"] == "BF16":
            array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=dtypes[info["dtype"]])
        # Some folders prefix every name with "bert." (BertModel saved from a task head).
        tensors[name.removeprefix("bert.")] = array.reshape(info["shape"]).astype(np.float64)
    return tensors


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def encode(ids, type_ids, t, config):
    """The last hidden states (tokens, dims) of one unpadded sequence."""
    heads = config["num_attention_heads"]
    eps = config["layer_norm_eps"]
    n = len(ids)
    x = (
        t["embeddings.word_embeddings.weight"][ids]
        + t["embeddings.position_embeddings.weight"][np.arange(n)]
        + t["embeddings.token_type_embeddings.weight"][type_ids]
    )
    x = layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)
    d = x.shape[1] // heads
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def lin(v, name):
            return v @ t[p + name + ".weight"].T + t[p + name + ".bias"]

        def split(v):
            return v.reshape(n, heads, d).transpose(1, 0, 2)

        q, k, v = (split(lin(x, f"attention.self.{w}")) for w in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores -= scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(n, heads * d)
        a = layer_norm(
            lin(context, "attention.output.dense") + x,
            t[p + "attention.output.LayerNorm.weight"],
            t[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        h = lin(a, "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
        x = layer_norm(
            lin(h, "output.dense") + a,
            t[p + "output.LayerNorm.weight"],
            t[p + "output.LayerNorm.bias"],
            eps,
        )
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--pooling", choices=["cls", "mean"])
    ap.add_argument("--prompt")
    ap.add_argument("--components", type=int, default=5)
    ap.add_argument("--rust", help="JSON vectors from the embed example, one per sentence")
    args = ap.parse_args()

    directory = args.model_dir
    config = read_json(os.path.join(directory, "config.json"))
    pooling = args.pooling or folder_pooling(directory)
    prompt = folder_prompt(directory) if args.prompt is None else args.prompt
    max_tokens = read_json(os.path.join(directory, "sentence_bert_config.json"), {}).get(
        "max_seq_length", 256
    )
    tokenizer = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_tokens)
    t = load_safetensors(os.path.join(directory, "model.safetensors"))

    rust = None
    if args.rust:
        with open(args.rust) as f:
            rust = json.load(f)
    print(f"{directory}: pooling {pooling}, prompt {prompt!r}, up to {max_tokens} tokens")
    worst = 0.0
    for i, text in enumerate(SENTENCES):
        enc = tokenizer.encode(prompt + text)
        hidden = encode(np.array(enc.ids), np.array(enc.type_ids), t, config)
        pooled = hidden[0] if pooling == "cls" else hidden.mean(0)
        vector = pooled / max(np.linalg.norm(pooled), 1e-12)
        head = ", ".join(f"{x:.6f}" for x in vector[: args.components])
        line = f"{text!r}: [{head}]"
        if rust is not None:
            other = np.array(rust[i], dtype=np.float64)
            diff = float(np.abs(other - vector).max())
            worst = max(worst, diff)
            line += f"  max |diff| {diff:.2e}, cosine {float(other @ vector):.6f}"
        print(line)
    if rust is not None and worst >= 1e-4:
        sys.exit(f"largest difference {worst:.2e} >= 1e-4")


if __name__ == "__main__":
    main()
