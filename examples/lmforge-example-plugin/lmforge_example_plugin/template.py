"""The Stanford Alpaca instruction format as an lmforge chat template."""

from __future__ import annotations

from lmforge.chat_template import ChatTemplate, ModelFiles


def uses_alpaca_markers(model_files: ModelFiles) -> bool:
    """A model fits when its own tokenizer template writes Alpaca's section markers."""
    return model_files.template_has("### Instruction:", "### Response:")


ALPACA = ChatTemplate(
    name="example-alpaca",
    meta_instruction=(
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request."
    ),
    eosys="\n\n",
    user="### Instruction:\n",
    eoh="\n\n",
    assistant="### Response:\n",
    eoa="</s>",
    separator="\n\n",
    stop_words=("</s>", "### Instruction:"),
    matcher=uses_alpaca_markers,
)
