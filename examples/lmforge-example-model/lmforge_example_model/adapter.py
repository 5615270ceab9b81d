"""OLMo 2's checkpoint and config mapped onto lmforge's canonical names.

OLMo 2 is the Llama layout except for its norms: none before attention or the MLP, one on each
of their outputs, and an RMSNorm over the whole query projection and the whole key projection
(all heads at once). The linears, embeddings and rope are Llama's, so the base adapter maps
them; this one names the four norms, which the plugin's layer reads (``torch_decoder.py``).
"""

from __future__ import annotations

from typing import ClassVar

from lmforge.model.adapter import ModelAdapter
from lmforge.model.config import ModelConfig
from lmforge.model.quant import QuantConfig

# The per-layer tensors besides the linears, canonical name -> shape from the config.
LAYER_NORMS = {
    "attn.q_proj_norm": lambda c: (c.q_size,),
    "attn.k_proj_norm": lambda c: (c.kv_size,),
    "attn_output_norm": lambda c: (c.hidden_size,),
    "mlp_output_norm": lambda c: (c.hidden_size,),
}


class Olmo2Adapter(ModelAdapter):
    """``Olmo2ForCausalLM``."""

    layer_names: ClassVar[dict[str, str]] = {
        "self_attn.q_norm.weight": "attn.q_proj_norm",
        "self_attn.k_norm.weight": "attn.k_proj_norm",
        "post_attention_layernorm.weight": "attn_output_norm",
        "post_feedforward_layernorm.weight": "mlp_output_norm",
    }

    def canonical_shapes(self, config: ModelConfig, quant: QuantConfig | None = None):
        """The Llama layout's weights without its two pre-norms, plus OLMo 2's four norms per
        layer: what ``--load-format dummy`` makes."""
        for name, shape, dtype in super().canonical_shapes(config, quant):
            if not name.endswith((".input_norm", ".post_attn_norm")):
                yield name, shape, dtype
        for i in range(config.num_layers):
            for norm, shape in LAYER_NORMS.items():
                yield f"layers.{i}.{norm}", shape(config), None
