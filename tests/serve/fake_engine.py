"""A deterministic stand-in for :class:`lmforge.engine.async_engine.AsyncEngine`.

Tokens are words. A reply echoes the prompt's last word, then walks a fixed word list (greedy) or
draws from it with ``random.Random(seed + choice)`` (sampling), one word per ``delay`` seconds,
and stops with ``"stop"`` after ``EOS_AFTER`` words unless ``ignore_eos``. It keeps the engine's
contract: errors at the first ``__anext__``, stop words cut before they are emitted, KV blocks
held while a request runs and freed when its generator closes.
"""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

from lmforge.engine.outputs import GenOut
from lmforge.errors import PromptTooLongError
from lmforge.messages import GenerationConfig

WORDS = "the quick brown fox jumps over a lazy dog and runs far away".split()
EOS_AFTER = 8
BLOCK_SIZE = 4


class FakeTokenizer:
    """Words <-> ids; unknown words get ids from 1000 upwards, in order of first sight."""

    def __init__(self) -> None:
        self.vocab = {w: i for i, w in enumerate(WORDS)}
        self.words = list(WORDS)

    def id_of(self, word: str) -> int:
        if word not in self.vocab:
            self.vocab[word] = 1000 + len(self.words) - len(WORDS)
            self.words.append(word)
        return self.vocab[word]

    def word_of(self, token_id: int) -> str:
        return self.words[token_id if token_id < len(WORDS) else token_id - 1000 + len(WORDS)]

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        return [self.id_of(w) for w in text.split()]

    def decode(self, ids: list[int]) -> str:
        return "".join(" " + self.word_of(i) for i in ids)


class FakeChatTemplate:
    def messages2prompt(self, messages: list[dict], sequence_start: bool = True) -> str:
        return " ".join(m["content"] for m in messages)

    def get_prompt(self, prompt: str, sequence_start: bool = True) -> str:
        return prompt


class FakeEngine:
    vocab_size = 100_000  # word ids start at 0, unknown words' at 1000

    def __init__(self, model_name: str = "fake-model", session_len: int = 64, delay: float = 0.005):
        self.model_name = model_name
        self.session_len = session_len
        self.delay = delay
        self.tokenizer = FakeTokenizer()
        self.chat_template = FakeChatTemplate()
        self.running: dict[int, int] = {}  # request id -> tokens held
        self.sessions: dict[int, list[int]] = {}
        self.totals = {"prompt_tokens_total": 0, "generation_tokens_total": 0, "requests_total": 0}
        self._next_id = 0

    def _encode(self, prompt: Any, do_preprocess: bool) -> list[int]:
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            return list(prompt)
        if isinstance(prompt, list):
            prompt = self.chat_template.messages2prompt(prompt)
        return self.tokenizer.encode(prompt)

    async def generate(
        self,
        prompt: Any,
        gen_config: GenerationConfig | None = None,
        session_id: int | None = None,
        sequence_start: bool = True,
        sequence_end: bool = True,
        do_preprocess: bool = True,
        adapter_name: str | None = None,
    ):
        gen_config = gen_config or GenerationConfig()
        gen_config.validate()
        ids = self._encode(prompt, do_preprocess)
        if session_id is not None and not sequence_start:
            ids = self.sessions.get(session_id, []) + ids
        if len(ids) >= self.session_len:
            raise PromptTooLongError(
                f"The prompt has {len(ids)} tokens but session_len is {self.session_len}; "
                "shorten it or raise --session-len."
            )
        rid, self._next_id = self._next_id, self._next_id + 1
        self.running[rid] = len(ids)
        self.totals["prompt_tokens_total"] += len(ids)
        queue: asyncio.Queue[GenOut] = asyncio.Queue()
        tasks = [
            asyncio.create_task(self._choice(rid, i, ids, gen_config, queue))
            for i in range(gen_config.n)
        ]
        remaining = gen_config.n
        try:
            while remaining:
                out = await queue.get()
                remaining -= out.finish_reason is not None
                if session_id is not None and out.index == 0 and out.finish_reason is not None:
                    if sequence_end:
                        self.sessions.pop(session_id, None)
                    else:
                        self.sessions[session_id] = ids + out.extra["all_ids"]
                yield out
        finally:
            for task in tasks:
                task.cancel()
            self.running.pop(rid, None)
            self.totals["requests_total"] += 1

    async def _choice(self, rid: int, index: int, ids: list[int], cfg: GenerationConfig, queue):
        rng = random.Random(None if cfg.random_seed is None else cfg.random_seed + index)
        limit = min(cfg.max_new_tokens, self.session_len - len(ids))
        text, out_ids = "", []
        for step in range(limit):
            if step == EOS_AFTER and not cfg.ignore_eos:
                break
            await asyncio.sleep(self.delay)
            if step == 0:
                token = ids[-1]
            elif cfg.greedy:
                token = self.tokenizer.id_of(WORDS[(step - 1 + index) % len(WORDS)])
            else:
                token = self.tokenizer.id_of(rng.choice(WORDS))
            self.running[rid] = self.running.get(rid, 0) + 1
            self.totals["generation_tokens_total"] += 1
            piece = self.tokenizer.decode([token])
            finish = None
            for stop in cfg.stop_words or ():
                if stop in text + piece:
                    piece = (text + piece)[: (text + piece).index(stop)][len(text) :]
                    finish = "stop"
            text += piece
            out_ids.append(token)
            logprobs = None
            if cfg.logprobs is not None:
                others = [self.tokenizer.id_of(w) for w in WORDS[: cfg.logprobs + 1]]
                top = {o: -1.0 - k for k, o in enumerate(others) if o != token}
                logprobs = [{token: -0.5, **top}]
            extra = {"all_ids": out_ids}
            out = GenOut(piece, [token], len(ids), step + 1, finish, index, logprobs, extra=extra)
            queue.put_nowait(out)
            if finish:
                return
        finish = "length" if len(out_ids) == limit else "stop"
        queue.put_nowait(
            GenOut("", [], len(ids), len(out_ids), finish, index, extra={"all_ids": out_ids})
        )

    async def end_session(self, session_id: int) -> None:
        self.sessions.pop(session_id, None)

    def history_tokens(self, session_id: int) -> int | None:
        history = self.sessions.get(session_id)
        return None if history is None else len(history)

    def stats(self) -> dict:
        used = sum(math.ceil(n / BLOCK_SIZE) for n in self.running.values())
        return {
            "num_running": len(self.running),
            "num_waiting": 0,
            "kv_blocks_used": used,
            "kv_blocks_total": 4096,
            "prefix_cache_hit_tokens": 0,
            **self.totals,
        }

    def reset_counters(self) -> None:
        self.totals = dict.fromkeys(self.totals, 0)

    def close(self) -> None:
        pass
