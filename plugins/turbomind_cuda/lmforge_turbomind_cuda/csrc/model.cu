// The whole forward step in one call: embedding, every decoder layer, the final norm and the
// lm_head, queued on one stream over buffers the caller allocated once. Nothing here allocates
// or synchronizes, so a decode step can be captured as a CUDA graph.
#include <vector>

#include "checks.h"
#include "kernels.h"

namespace turbomind {

struct Model {
  TmModelDesc desc;
  std::vector<TmLayer> layers;
};

static int linear(const TmModelDesc& d, void* y, const void* x, const void* w, int m, int n,
                  int k, cudaStream_t s) {
  if (m <= kGemvMaxRows) return gemv(d.dtype, y, x, w, m, n, k, s);
  return cublaslt_matmul(d.dtype, y, x, w, m, n, k, d.gemm_workspace, d.gemm_workspace_bytes, s);
}

static int forward(const TmModelDesc& d, const TmStep& st, cudaStream_t s) {
  const int T = st.num_tokens, H = d.hidden, D = d.head_dim;
  const int q_width = d.num_heads * D, qkv_width = (d.num_heads + 2 * d.num_kv_heads) * D;
  const float scale = 1.f / sqrtf((float)D);
#define TM_TRY(call) \
  if (int err_ = (call)) return err_
  TM_TRY(embedding(d.dtype, d.residual, d.embed, st.input_ids, T, H, d.vocab, s));
  for (int l = 0; l < d.num_layers; ++l) {
    const TmLayer& L = d.layers[l];
    // The first layer normalizes the embedding itself; later ones add the last output first.
    TM_TRY(rms_norm(d.dtype, d.normed, l ? d.residual : nullptr, l ? d.x : d.residual,
                    L.input_norm, nullptr, T, H, d.norm_eps, s));
    TM_TRY(linear(d, d.qkv_out, d.normed, L.qkv, T, qkv_width, H, s));
    TM_TRY(rope_kv(d.dtype, d.qkv_out, L.qkv_bias, d.inv_freq, st.positions, st.slots,
                   L.k_cache, L.v_cache, T, d.num_heads, d.num_kv_heads, D, s));
    TM_TRY(decode_attention(d.dtype, d.attn_out, d.qkv_out, qkv_width, L.k_cache, L.v_cache,
                            st.block_tables, st.block_table_stride, st.kv_lens, st.num_decode,
                            d.num_heads, d.num_kv_heads, D, d.block_size, scale,
                            d.sliding_window, st.num_splits, d.split_out, d.split_lse, s));
    TM_TRY(prefill_attention(d.dtype, d.attn_out, d.qkv_out, qkv_width, L.k_cache, L.v_cache,
                             st.block_tables, st.block_table_stride, st.kv_lens, st.q_starts,
                             st.tile_seq, st.tile_start, st.num_prefill_tiles, d.num_heads,
                             d.num_kv_heads, D, d.block_size, scale, d.sliding_window, s));
    TM_TRY(linear(d, d.x, d.attn_out, L.o, T, H, q_width, s));
    TM_TRY(rms_norm(d.dtype, d.normed, d.residual, d.x, L.post_norm, nullptr, T, H, d.norm_eps,
                    s));
    TM_TRY(linear(d, d.gate_up_out, d.normed, L.gate_up, T, 2 * d.inter, H, s));
    TM_TRY(silu_mul(d.dtype, d.act, d.gate_up_out, T, d.inter, s));
    TM_TRY(linear(d, d.x, d.act, L.down, T, H, d.inter, s));
  }
  if (st.num_logits == 0) return 0;
  TM_TRY(rms_norm(d.dtype, d.normed, d.residual, d.x, d.final_norm, st.logit_rows,
                  st.num_logits, H, d.norm_eps, s));
  TM_TRY(linear(d, st.logits_lowp, d.normed, d.lm_head, st.num_logits, d.vocab, H, s));
  TM_TRY(to_float(d.dtype, st.logits, st.logits_lowp, (int64_t)st.num_logits * d.vocab, s));
#undef TM_TRY
  return 0;
}

}  // namespace turbomind

using namespace turbomind;

extern "C" {

int tm_model_create(const TmModelDesc* desc, void** handle) {
  if (int e = check_model(desc)) return e;
  Model* model = new Model;
  model->desc = *desc;
  model->layers.assign(desc->layers, desc->layers + desc->num_layers);
  model->desc.layers = model->layers.data();
  *handle = model;
  return 0;
}

int tm_model_destroy(void* handle) {
  delete static_cast<Model*>(handle);
  return 0;
}

int tm_forward(void* handle, const TmStep* step, void* stream) {
  if (!handle) return fail("The model handle is a null pointer.");
  const TmModelDesc& d = static_cast<Model*>(handle)->desc;
  if (int e = check_step(&d, step)) return e;
  // The current device is per host thread, and the engine may step from another thread.
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess || current != d.device) {
    if (cudaSetDevice(d.device) != cudaSuccess)
      return fail("Cannot make CUDA device %d current.", d.device);
  }
  return forward(d, *step, as_stream(stream));
}

}  // extern "C"
