#!/usr/bin/env python3
"""Checks trestle-embed's MPNet against an independent reference: all-mpnet-base-v2 written
again here in float64 NumPy (with its own WordPiece tokenizer, reading the vocabulary from
tokenizer.json), over the same model files. Prints, per sentence, the largest absolute
difference between the two embeddings and their cosine; exits 1 when a difference is 1e-4 or
more. Not part of CI (it needs the 440 MB weights).

    .venv/bin/python bench/mpnet_reference.py [MODEL_DIR]    (default: $TRESTLE_MPNET_DIR,
                                                               then .venv/models/all-mpnet-base-v2)

Builds and runs `cargo run -p trestle-embed --example embed` for the Rust side (or reads its
JSON output from --rust FILE). Needs numpy; uses scipy's erf when it is installed.
"""

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import unicodedata

import numpy as np

try:
    from scipy.special import erf
except ImportError:  # pragma: no cover - slower, same numbers
    erf = np.vectorize(math.erf)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SENTENCES = [
    "How do I reset my password?",
    "I forgot my password, how can I change it?",
    "What is the capital of France?",
    "Can I return a laptop bought on sale within 30 days?",
    "Do you deliver with UPS or FedEx to Zürich, Köln and São Paulo?",
    "ok",
    "",
    # Over 128 tokens: exercises every relative-position bucket, both directions.
    " ".join(
        f"Step {i}: open the settings page, choose 'Security', then press reset."
        for i in range(12)
    ),
]


# ---- tokenizer: BERT normalization and pre-tokenization, WordPiece, RoBERTa specials ----


def _is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp):
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def normalize(text):
    """BertNormalizer(clean_text, handle_chinese_chars, lowercase, strip_accents follows it)."""
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD:
            continue
        if ch in "\t\n\r" or unicodedata.category(ch) == "Zs":
            out.append(" ")
            continue
        if unicodedata.category(ch).startswith("C"):
            continue
        out.append(f" {ch} " if _is_cjk(cp) else ch)
    text = unicodedata.normalize("NFD", "".join(out))
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    return text.lower()


def pre_tokenize(text):
    words = []
    for chunk in text.split():
        word = ""
        for ch in chunk:
            if _is_punctuation(ch):
                if word:
                    words.append(word)
                    word = ""
                words.append(ch)
            else:
                word += ch
        if word:
            words.append(word)
    return words


def wordpiece(word, vocab, unk="[UNK]", max_chars=100):
    if len(word) > max_chars:
        return [vocab[unk]]
    ids, start = [], 0
    while start < len(word):
        end, found = len(word), None
        while start < end:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                found = vocab[piece]
                break
            end -= 1
        if found is None:
            return [vocab[unk]]
        ids.append(found)
        start = end
    return ids


def tokenize(text, vocab, max_tokens):
    ids = [i for w in pre_tokenize(normalize(text)) for i in wordpiece(w, vocab)]
    return [vocab["<s>"]] + ids[: max_tokens - 2] + [vocab["</s>"]]


# ---- model ----


def load_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        tensors[name] = (
            np.frombuffer(data[start:end], dtype="<f4").reshape(info["shape"]).astype(np.float64)
        )
    return tensors


def bucket(relative, num_buckets=32, max_distance=128):
    """T5-style bidirectional bucket of key − query, in float32 as PyTorch computes it."""
    half = num_buckets // 2
    ret = half if relative > 0 else 0
    n = abs(relative)
    max_exact = half // 2
    if n < max_exact:
        return ret + n
    scale = (
        np.log(np.float32(n) / np.float32(max_exact))
        / np.float32(math.log(max_distance / max_exact))
        * np.float32(half - max_exact)
    )
    return ret + min(max_exact + int(scale), half - 1)


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def embed(ids, t, config):
    heads = config["num_attention_heads"]
    eps = config["layer_norm_eps"]
    pad = config["pad_token_id"]
    n = len(ids)
    positions = np.arange(n) + pad + 1
    x = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][positions]
    x = layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)
    table = t["encoder.relative_attention_bias.weight"]  # (buckets, heads)
    buckets = np.array([[bucket(k - q, table.shape[0]) for k in range(n)] for q in range(n)])
    bias = table[buckets].transpose(2, 0, 1)  # (heads, query, key)
    d = x.shape[1] // heads
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def lin(v, name):
            return v @ t[p + name + ".weight"].T + t[p + name + ".bias"]

        def split(v):
            return v.reshape(n, heads, d).transpose(1, 0, 2)

        q, k, v = (split(lin(x, f"attention.attn.{w}")) for w in "qkv")
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d) + bias
        scores -= scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(n, heads * d)
        a = layer_norm(
            lin(context, "attention.attn.o") + x,
            t[p + "attention.LayerNorm.weight"],
            t[p + "attention.LayerNorm.bias"],
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
    pooled = x.mean(0)
    return pooled / max(np.linalg.norm(pooled), 1e-12)


def model_dir(arg):
    for candidate in (arg, os.environ.get("TRESTLE_MPNET_DIR"), os.path.join(ROOT, ".venv/models/all-mpnet-base-v2")):
        if candidate and os.path.isfile(os.path.join(candidate, "model.safetensors")):
            return candidate
    sys.exit("no all-mpnet-base-v2 folder: pass one, set TRESTLE_MPNET_DIR or run bench/cache-encoders.sh")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", nargs="?")
    ap.add_argument("--rust", help="the embed example's JSON output (default: run it)")
    args = ap.parse_args()
    directory = model_dir(args.model_dir)

    if args.rust:
        with open(args.rust) as f:
            rust = json.load(f)
    else:
        done = subprocess.run(
            ["cargo", "run", "-q", "-p", "trestle-embed", "--example", "embed", "--", directory],
            input="\n".join(SENTENCES) + "\n",
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if done.returncode != 0:
            sys.exit(done.stderr)
        rust = json.loads(done.stdout)
    if len(rust) != len(SENTENCES):
        sys.exit(f"expected {len(SENTENCES)} vectors, got {len(rust)}")

    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(directory, "tokenizer.json")) as f:
        vocab = json.load(f)["model"]["vocab"]
    max_tokens = 384
    sb = os.path.join(directory, "sentence_bert_config.json")
    if os.path.isfile(sb):
        with open(sb) as f:
            max_tokens = json.load(f).get("max_seq_length", max_tokens)
    tensors = load_safetensors(os.path.join(directory, "model.safetensors"))

    worst = 0.0
    reference = []
    for text, got in zip(SENTENCES, rust):
        ids = tokenize(text, vocab, max_tokens)
        want = embed(ids, tensors, config)
        reference.append(want)
        got = np.array(got, dtype=np.float64)
        diff = float(np.abs(got - want).max())
        worst = max(worst, diff)
        print(f"{len(ids):>4} tokens  max |diff| {diff:.2e}  cosine {float(got @ want):.8f}  {text[:60]!r}")
    print("first components of sentence 1 (reference):", ", ".join(f"{v:.6f}" for v in reference[0][:5]))
    print(f"cosine 'reset password' / paraphrase {reference[0] @ reference[1]:.4f}, / unrelated {reference[0] @ reference[2]:.4f}")
    print(f"largest absolute difference over {len(SENTENCES)} sentences: {worst:.2e}")
    sys.exit(0 if worst < 1e-4 else 1)


if __name__ == "__main__":
    main()
