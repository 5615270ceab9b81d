"""CPU throughput of lmforge's pytorch engine against transformers' ``generate`` on the demo model.

Runs, on the same weights and the same number of threads:
  1. transformers, one prompt at a time (greedy, ``max_new_tokens`` each);
  2. lmforge, the same prompts all at once (continuous batching);
  3. lmforge and transformers, a single stream.
Prints output tokens/s for each and the two ratios. Usage:

    python scripts/bench_cpu.py [--prompts 16] [--new-tokens 128] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time


def prompts_for(n: int) -> list[str]:
    topics = ["the sea", "a city at night", "bread", "mountains", "rain", "old books", "trains",
              "the moon", "gardens", "music", "winter", "friendship", "bees", "rivers", "clocks",
              "lighthouses"]
    return [f"Write a short story about {topics[i % len(topics)]}." for i in range(n)]


def bench_hf(model, tokenizer, prompts: list[str], new_tokens: int) -> tuple[int, float]:
    import torch

    total, start = 0, time.perf_counter()
    for prompt in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                            add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"]
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False)
        total += out.shape[1] - ids.shape[1]
    return total, time.perf_counter() - start


def bench_lmforge(pipe, prompts: list[str], new_tokens: int) -> tuple[int, float]:
    from lmforge import GenerationConfig

    cfg = GenerationConfig(max_new_tokens=new_tokens, ignore_eos=True, top_k=1)
    start = time.perf_counter()
    responses = pipe(prompts, gen_config=cfg)
    return sum(r.generate_token_len for r in responses), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()

    import torch
    from lmforge import PytorchEngineConfig, pipeline
    from lmforge.demo import demo_model_path
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    gguf = demo_model_path()
    prompts = prompts_for(args.prompts)

    hf_tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    hf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name).eval()
    bench_hf(hf_model, hf_tok, prompts[:1], 8)  # warm-up
    hf_n, hf_t = bench_hf(hf_model, hf_tok, prompts, args.new_tokens)
    hf1_n, hf1_t = bench_hf(hf_model, hf_tok, prompts[:1], args.new_tokens)
    del hf_model

    pipe = pipeline(str(gguf), backend_config=PytorchEngineConfig(dtype="float32"))
    bench_lmforge(pipe, prompts[:2], 8)  # warm-up
    lm_n, lm_t = bench_lmforge(pipe, prompts, args.new_tokens)
    lm1_n, lm1_t = bench_lmforge(pipe, prompts[:1], args.new_tokens)
    pipe.close()

    figures = {
        "threads": args.threads,
        "prompts": args.prompts,
        "new_tokens": args.new_tokens,
        "hf_sequential_tok_s": hf_n / hf_t,
        "lmforge_concurrent_tok_s": lm_n / lm_t,
        "hf_single_tok_s": hf1_n / hf1_t,
        "lmforge_single_tok_s": lm1_n / lm1_t,
    }
    figures["concurrent_ratio"] = figures["lmforge_concurrent_tok_s"] / figures["hf_sequential_tok_s"]
    figures["single_ratio"] = figures["lmforge_single_tok_s"] / figures["hf_single_tok_s"]
    for key, value in figures.items():
        print(f"{key:>28}: {value:.2f}" if isinstance(value, float) else f"{key:>28}: {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
