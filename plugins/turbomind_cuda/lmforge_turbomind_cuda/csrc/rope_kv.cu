// Rotary embedding fused with the K/V cache write: one block per token adds the qkv bias,
// rotates q in place (half-split rotation, as in transformers' Llama) and writes the rotated k
// and v straight into the token's cache slot, so k never makes a round trip through memory.
#include "common.cuh"

namespace turbomind {

template <typename T>
__global__ void rope_kv_kernel(T* qkv, const T* bias, const float* inv_freq,
                               const int32_t* positions, const int32_t* slots, T* k_cache,
                               T* v_cache, int heads, int kv_heads, int head_dim) {
  pdl_begin();
  const int token = blockIdx.x;
  const int half = head_dim / 2;
  const int width = (heads + 2 * kv_heads) * head_dim;
  T* row = qkv + (int64_t)token * width;
  const float pos = (float)positions[token];
  const int slot = slots[token];
  // Rotated pairs (d, d + half) of every q and k head.
  const int pairs = (heads + kv_heads) * half;
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int head = p / half, d = p % half;
    const int col = head * head_dim + d;
    float a = Math<T>::to_float(row[col]), b = Math<T>::to_float(row[col + half]);
    if (bias) {
      a = round_to<T>(a + Math<T>::to_float(bias[col]));
      b = round_to<T>(b + Math<T>::to_float(bias[col + half]));
    }
    // transformers: cos and sin in float32, cast to the model dtype, products rounded.
    const float angle = pos * inv_freq[d];
    const float c = round_to<T>(cosf(angle)), s = round_to<T>(sinf(angle));
    const float ra = round_to<T>(round_to<T>(a * c) - round_to<T>(b * s));
    const float rb = round_to<T>(round_to<T>(b * c) + round_to<T>(a * s));
    if (head < heads) {
      row[col] = Math<T>::from_float(ra);
      row[col + half] = Math<T>::from_float(rb);
    } else if (slot >= 0) {
      T* dst = k_cache + ((int64_t)slot * kv_heads + (head - heads)) * head_dim + d;
      dst[0] = Math<T>::from_float(ra);
      dst[half] = Math<T>::from_float(rb);
    }
  }
  if (slot < 0) return;
  const int v_col = (heads + kv_heads) * head_dim;
  for (int i = threadIdx.x; i < kv_heads * head_dim; i += blockDim.x) {
    float v = Math<T>::to_float(row[v_col + i]);
    if (bias) v += Math<T>::to_float(bias[v_col + i]);
    v_cache[(int64_t)slot * kv_heads * head_dim + i] = Math<T>::from_float(v);
  }
}

int rope_kv(int dtype, void* qkv, const void* bias, const float* inv_freq,
            const int32_t* positions, const int32_t* slots, void* k_cache, void* v_cache,
            int tokens, int heads, int kv_heads, int head_dim, cudaStream_t stream) {
  if (tokens == 0) return 0;
  return TM_DISPATCH_DTYPE(dtype, [&] {
    return launch("rope_kv", rope_kv_kernel<T>, dim3(tokens), dim3(256), stream, (T*)qkv,
                  (const T*)bias, inv_freq, positions, slots, (T*)k_cache, (T*)v_cache, heads,
                  kv_heads, head_dim);
  });
}

}  // namespace turbomind
