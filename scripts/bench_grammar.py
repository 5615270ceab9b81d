"""Host cost of grammar-constrained decoding per step: each installed grammar library (llguidance,
the one lmforge uses; xgrammar and outlines-core when installed) fills the token bitmasks of a
batch and advances every row by one token, on the same token sequences.

The sequences are valid replies drawn once with llguidance (a random walk through the grammar,
uniform over the allowed tokens), then replayed through every library, so each does the same
work. Prints compile time and milliseconds per step for each schema and batch size. Usage:

    python scripts/bench_grammar.py [--tokenizer PATH] [--vocab-size 128256] [--batch 16 256]
        [--threads 1 4 16]

--threads runs llguidance's mask filling with each thread count in turn (default: what the
engine uses, LMFORGE_GRAMMAR_THREADS or the usable CPUs up to 16).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
W2_SCHEMA = json.loads((ROOT / "benchmarks/structured/w2-json-schema.json").read_text())[
    "json_schema"]["schema"]
SCHEMAS = {
    "json_object": {"type": "object"},
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string"}, "age": {"type": "integer"},
            "role": {"enum": ["admin", "user", "guest"]},
            "address": {"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"]},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "age", "role", "address", "tags"],
    },
    "w2": W2_SCHEMA,
    # llguidance computes masks inside length-bounded strings much more slowly than elsewhere.
    "bounded_strings": {"type": "array", "items": {"type": "string", "maxLength": 8}},
}


def sample_replies(compiler, grammar, count: int, steps: int, seed: int) -> list[list[int]]:
    """Token sequences the grammar accepts: at most ``steps`` uniform draws from the mask."""
    from lmforge.structured.masks import fill_bitmask

    rng = random.Random(seed)
    replies = []
    shifts = torch.arange(32, dtype=torch.int32)
    for _ in range(count):
        state, tokens = compiler.compile(grammar).new_state(), []
        while len(tokens) < steps and not state.done:
            allowed = ((fill_bitmask([state])[0].unsqueeze(1) >> shifts) & 1).flatten()
            token = rng.choice(allowed.nonzero().flatten().tolist())
            assert state.accept(token)
            tokens.append(token)
        replies.append(tokens)
    return replies


def llguidance_lib(tokenizer, vocab_size: int, eos: list[int]):
    from lmforge.structured.compiler import GrammarCompiler
    from lmforge.structured.grammar import Grammar
    from lmforge.structured.masks import fill_bitmask

    compiler = GrammarCompiler(tokenizer, vocab_size, eos)
    compiler._tokenizer()

    def compile_schema(schema):
        compiled = compiler.compile(Grammar.json_schema(schema))
        return lambda: compiled.new_state()

    def step(states, tokens):
        fill_bitmask(states)
        for state, token in zip(states, tokens, strict=True):
            state.accept(token)

    return compiler, compile_schema, step


def xgrammar_lib(tokenizer, vocab_size: int, eos: list[int]):
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tokenizer.hf, vocab_size=vocab_size,
                                              stop_token_ids=eos)
    compiler = xgr.GrammarCompiler(info, max_threads=16)
    batch = xgr.BatchGrammarMatcher()

    def compile_schema(schema):
        compiled = compiler.compile_json_schema(json.dumps(schema), any_whitespace=False,
                                                separators=(", ", ": "))
        return lambda: xgr.GrammarMatcher(compiled)

    def step(matchers, tokens):
        mask = xgr.allocate_token_bitmask(len(matchers), vocab_size)
        batch.batch_fill_next_token_bitmask(matchers, mask)
        xgr.BatchGrammarMatcher.batch_accept_token(matchers, tokens)

    return None, compile_schema, step


def replay(new_matcher, step, replies: list[list[int]], batch: int, repeats: int = 3) -> float:
    """Milliseconds per step for ``batch`` rows that follow ``replies`` (cycled); the best of
    ``repeats`` runs."""
    rows = [replies[i % len(replies)] for i in range(batch)]
    length = min(len(r) for r in rows)
    best = float("inf")
    for _ in range(repeats):
        matchers = [new_matcher() for _ in rows]
        start = time.perf_counter()
        for i in range(length):
            step(matchers, [r[i] for r in rows])
        best = min(best, (time.perf_counter() - start) / length * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default=None, help="default: the demo model's")
    parser.add_argument("--vocab-size", type=int, default=None, help="the logits' width")
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="llguidance's mask-filling threads, one run per count")
    args = parser.parse_args()

    from lmforge.demo import demo_model_path
    from lmforge.structured.grammar import Grammar
    from lmforge.structured.masks import grammar_threads, reset_executor
    from lmforge.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(args.tokenizer or demo_model_path())
    vocab = args.vocab_size or tokenizer.vocab_size
    eos = tokenizer.eos_token_ids
    libs = {"llguidance": llguidance_lib}
    try:
        import xgrammar  # noqa: F401

        libs["xgrammar"] = xgrammar_lib
    except ImportError:
        print("xgrammar is not installed: skipped")
    reference, _, _ = llguidance_lib(tokenizer, vocab, eos)
    print(f"vocabulary {vocab}, threads {torch.get_num_threads()}")
    runs = [(lib, None) for lib in libs if lib != "llguidance"]
    runs = [("llguidance", n) for n in (args.threads or [None])] + runs
    for name, schema in SCHEMAS.items():
        replies = sample_replies(reference, Grammar.json_schema(schema), 8, args.steps, seed=0)
        for lib, threads in runs:
            if threads is not None:
                os.environ["LMFORGE_GRAMMAR_THREADS"] = str(threads)
                reset_executor()
            _, compile_schema, step = libs[lib](tokenizer, vocab, eos)
            start = time.perf_counter()
            new_matcher = compile_schema(schema)
            compile_ms = (time.perf_counter() - start) * 1e3
            per_step = [replay(new_matcher, step, replies, b) for b in args.batch]
            steps = ", ".join(f"batch {b}: {ms:.2f} ms/step"
                              for b, ms in zip(args.batch, per_step, strict=True))
            label = f"{lib} x{threads or grammar_threads()}" if lib == "llguidance" else lib
            print(f"{name:12s} {label:14s} compile {compile_ms:7.1f} ms; {steps}")


if __name__ == "__main__":
    main()
