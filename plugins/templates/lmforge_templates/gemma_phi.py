"""Turn-marker formats of Gemma and Phi-3 (and the InternVL models built on Phi-3)."""

from __future__ import annotations

from lmforge.chat_template import ChatTemplate, SystemInUserTemplate

from .chatml import INTERNVL2_SYSTEM
from .matching import family, is_chat

_PHI3_STOPS = ("<|end|>", "<|endoftext|>")


def templates() -> list[ChatTemplate]:
    return [
        # Gemma has no system turn; a system prompt opens the first user turn (Gemma 3's own
        # template writes it the same way).
        SystemInUserTemplate(
            name="gemma", bos="<bos>", eosys="\n\n",
            user="<start_of_turn>user\n", eoh="<end_of_turn>\n",
            assistant="<start_of_turn>model\n", eoa="<end_of_turn>", separator="\n",
            stop_words=("<end_of_turn>",), priority=10,
            matcher=lambda f: (family(f, "gemma", "gemma", "gemma2", "gemma3", "gemma3_text")
                               and (is_chat(f) or f.template_has("<start_of_turn>"))),
        ),
        ChatTemplate(
            name="phi-3", system="<|system|>\n", eosys="<|end|>\n", user="<|user|>\n",
            eoh="<|end|>\n", assistant="<|assistant|>\n", eoa="<|end|>", separator="\n",
            stop_words=_PHI3_STOPS, priority=10,
            matcher=lambda f: family(f, r"phi[-_]?3", "phi3") and is_chat(f),
        ),
        ChatTemplate(
            name="internvl2-phi3", system="<|system|>\n", meta_instruction=INTERNVL2_SYSTEM,
            eosys="<|end|>\n", user="<|user|>\n", eoh="<|end|>\n", assistant="<|assistant|>\n",
            eoa="<|end|>", separator="\n", stop_words=_PHI3_STOPS, priority=20,
            matcher=lambda f: f.name_matches(r"internvl2[-_]4b"),
        ),
        # Mini-InternVL-Chat-4B-V1-5 writes its turns without newlines between them.
        ChatTemplate(
            name="internvl-phi3", system="<|system|>\n",
            meta_instruction="You are an AI assistant whose name is Phi-3.",
            eosys="<|end|>", user="<|user|>\n", eoh="<|end|>", assistant="<|assistant|>\n",
            eoa="<|end|>", stop_words=_PHI3_STOPS, priority=20,
            matcher=lambda f: f.name_matches(r"mini[-_]internvl[-_]chat[-_]4b[-_]v1[-_]5"),
        ),
    ]
