// Argument checks that need no GPU: every entry point runs them before it launches anything, and
// the tests call them on machines without one.
#include "checks.h"

namespace turbomind {

int check_dtype(int dtype) {
  if (dtype != TM_FLOAT16 && dtype != TM_BFLOAT16)
    return fail("dtype code %d is not float16 (0) or bfloat16 (1).", dtype);
  return 0;
}

int check_heads(int heads, int kv_heads, int head_dim) {
  if (head_dim != 64 && head_dim != 128)
    return fail("head_dim %d is not supported; the kernels take 64 or 128.", head_dim);
  if (heads < 1 || kv_heads < 1 || heads % kv_heads != 0)
    return fail("%d query heads cannot be grouped over %d key/value heads.", heads, kv_heads);
  return 0;
}

int check_width(const char* name, int width) {
  if (width < 8 || width % 8 != 0)
    return fail("%s is %d; it must be a positive multiple of 8 (16-byte rows).", name, width);
  return 0;
}

int check_ptr(const char* name, const void* p) {
  if (p == nullptr) return fail("%s is a null pointer.", name);
  if (!aligned16(p)) return fail("%s is not 16-byte aligned.", name);
  return 0;
}

int check_model(const TmModelDesc* d) {
  if (!d) return fail("The model description is a null pointer.");
  if (d->device < 0) return fail("device is %d; it must be a CUDA device index.", d->device);
  if (int e = check_dtype(d->dtype)) return e;
  if (int e = check_heads(d->num_heads, d->num_kv_heads, d->head_dim)) return e;
  if (int e = check_width("hidden", d->hidden)) return e;
  if (int e = check_width("inter", d->inter)) return e;
  if (d->num_layers < 1) return fail("num_layers is %d; it must be at least 1.", d->num_layers);
  if (d->vocab < 1) return fail("vocab is %d; it must be at least 1.", d->vocab);
  if (d->block_size < 1) return fail("block_size is %d; it must be at least 1.", d->block_size);
  if (d->max_tokens < 1 || d->max_seqs < 1 || d->max_splits < 1)
    return fail("max_tokens, max_seqs and max_splits must be at least 1 (got %d, %d, %d).",
                d->max_tokens, d->max_seqs, d->max_splits);
  if (d->sliding_window < 0) return fail("sliding_window is %d; use 0 for none.", d->sliding_window);
  if (!(d->norm_eps > 0.f)) return fail("norm_eps must be positive.");
  if (!d->layers) return fail("layers is a null pointer.");
  const char* names[] = {"embed", "final_norm", "lm_head", "x", "residual", "normed",
                         "qkv_out", "attn_out", "gate_up_out", "act", "split_out", "split_lse",
                         "inv_freq"};
  const void* ptrs[] = {d->embed, d->final_norm, d->lm_head, d->x, d->residual, d->normed,
                        d->qkv_out, d->attn_out, d->gate_up_out, d->act, d->split_out,
                        d->split_lse, d->inv_freq};
  for (int i = 0; i < 13; ++i)
    if (int e = check_ptr(names[i], ptrs[i])) return e;
  if (!d->gemm_workspace || d->gemm_workspace_bytes < (1u << 20))
    return fail("gemm_workspace must hold at least 1 MiB.");
  for (int l = 0; l < d->num_layers; ++l) {
    const TmLayer& L = d->layers[l];
    const void* lp[] = {L.input_norm, L.qkv, L.o, L.post_norm, L.gate_up, L.down, L.k_cache,
                        L.v_cache};
    const char* ln[] = {"input_norm", "qkv", "o", "post_norm", "gate_up", "down", "k_cache",
                        "v_cache"};
    for (int i = 0; i < 8; ++i)
      if (!lp[i] || !aligned16(lp[i]))
        return fail("Layer %d's %s is %s.", l, ln[i], lp[i] ? "not 16-byte aligned" : "missing");
  }
  return 0;
}

int check_step(const TmModelDesc* d, const TmStep* s) {
  if (int e = check_model(d)) return e;
  if (!s) return fail("The step description is a null pointer.");
  if (s->num_tokens < 1 || s->num_tokens > d->max_tokens)
    return fail("The step has %d tokens; the buffers hold 1 to %d.", s->num_tokens,
                d->max_tokens);
  if (s->num_seqs < 1 || s->num_seqs > s->num_tokens)
    return fail("The step has %d sequences for %d tokens.", s->num_seqs, s->num_tokens);
  if (s->num_decode < 0 || s->num_decode > s->num_seqs || s->num_decode > d->max_seqs)
    return fail("num_decode %d is outside 0..%d.", s->num_decode,
                s->num_seqs < d->max_seqs ? s->num_seqs : d->max_seqs);
  if (s->num_decode > 0 && (s->num_splits < 1 || s->num_splits > d->max_splits))
    return fail("num_splits %d is outside 1..%d.", s->num_splits, d->max_splits);
  if (s->num_decode < s->num_seqs && s->num_prefill_tiles < 1)
    return fail("The step has prompt chunks but no prefill tiles.");
  if (s->num_logits < 0 || s->num_logits > d->max_tokens)
    return fail("num_logits %d is outside 0..%d.", s->num_logits, d->max_tokens);
  if (s->block_table_stride < 1)
    return fail("block_table_stride is %d; it must be at least 1.", s->block_table_stride);
  const void* arrays[] = {s->input_ids, s->positions, s->slots, s->block_tables, s->kv_lens,
                          s->q_starts};
  const char* names[] = {"input_ids", "positions", "slots", "block_tables", "kv_lens",
                         "q_starts"};
  for (int i = 0; i < 6; ++i)
    if (!arrays[i]) return fail("%s is a null pointer.", names[i]);
  if (s->num_prefill_tiles > 0 && (!s->tile_seq || !s->tile_start))
    return fail("tile_seq and tile_start must be given with prefill tiles.");
  if (s->num_logits > 0 && (!s->logit_rows || !s->logits || !s->logits_lowp))
    return fail("logit_rows, logits and logits_lowp must be given when logits are asked for.");
  return 0;
}

}  // namespace turbomind
