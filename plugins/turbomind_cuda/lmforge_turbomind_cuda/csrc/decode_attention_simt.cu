// Paged decode attention on the CUDA cores: the fallback of the tensor-core kernel in
// decode_attention.cu (LMFORGE_TURBOMIND_DECODE=simt picks it), same grid and split outputs.
//
// A block serves one sequence, one K/V head and up to HEADS query heads of its group, over one
// split of the sequence's tokens: each K/V row is read once for the whole group. Lanes work in
// groups of head_dim / 8 (one 16-byte slice each), so a warp handles 32 / (head_dim / 8) tokens
// at a time and keeps its own running max, sum and output (online softmax); the warps' states
// merge through shared memory at the end. Each iteration loads the K/V rows of two steps before
// using them, so a warp keeps 2 KB in flight (decode attention is bound by memory bandwidth).
//
// The K/V rows are loaded through load_kv(), the one place an int8/int4 cache would dequantize.
#include <math.h>

#include "common.cuh"
#include "kernels.h"

namespace turbomind {

constexpr int kDecodeWarps = 4;
constexpr int kDecodeUnroll = 2;
constexpr int kDecodeMaxHeads = 8;

template <typename T, int D>
static __device__ __forceinline__ void load_kv(const T* cache, int64_t index, float (&f)[8]) {
  Vec8<T> v;
  v.load(cache + index);
  v.to_float(f);
}

template <typename T, int D, int HEADS>
__global__ void __launch_bounds__(kDecodeWarps * 32)
decode_attention_simt_kernel(T* out, const T* q, int q_stride, const T* k_cache,
                             const T* v_cache, const int32_t* block_tables, int bt_stride,
                             const int32_t* kv_lens, int heads, int kv_heads, int block_size,
                             float scale_log2, int window, int num_splits, float* split_out,
                             float* split_lse) {
  constexpr int LANES = D / 8;           // lanes per token
  constexpr int TPW = 32 / LANES;        // tokens per warp per iteration
  constexpr int GROUPS = kDecodeWarps * TPW;
  __shared__ float s_m[GROUPS][HEADS], s_l[GROUPS][HEADS];
  __shared__ float s_acc[GROUPS][HEADS][D];
  pdl_begin();

  const int group_size = heads / kv_heads;
  const int chunks = (group_size + HEADS - 1) / HEADS;
  const int kvh = blockIdx.x / chunks;
  const int h0 = kvh * group_size + (blockIdx.x % chunks) * HEADS;
  const int nh = min(HEADS, kvh * group_size + group_size - h0);
  const int seq = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int sub = lane % LANES, grp = lane / LANES;

  const int kv_len = kv_lens[seq];
  const int first = window > 0 ? max(0, kv_len - window) : 0;
  const int per = ((kv_len - first + num_splits - 1) / num_splits + 15) / 16 * 16;
  const int t0 = first + split * per;
  const int t1 = min(kv_len, t0 + per);

  float qf[HEADS][8];
#pragma unroll
  for (int h = 0; h < HEADS; ++h) {
    if (h < nh) {
      Vec8<T> v;
      v.load(q + (int64_t)seq * q_stride + (h0 + h) * D + sub * 8);
      v.to_float(qf[h]);
#pragma unroll
      for (int i = 0; i < 8; ++i) qf[h][i] *= scale_log2;
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) qf[h][i] = 0.f;
    }
  }
  float m[HEADS], l[HEADS], acc[HEADS][8];
#pragma unroll
  for (int h = 0; h < HEADS; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[h][i] = 0.f;
  }

  const int32_t* table = block_tables + (int64_t)seq * bt_stride;
  constexpr int STRIDE = kDecodeWarps * TPW;  // tokens between a warp's steps
  // The loop bound is uniform across the warp (the shuffles need every lane).
  for (int base = t0 + warp * TPW; base < t1; base += kDecodeUnroll * STRIDE) {
    float kf[kDecodeUnroll][8], vf[kDecodeUnroll][8];
    bool valid[kDecodeUnroll];
#pragma unroll
    for (int u = 0; u < kDecodeUnroll; ++u) {
      const int t = base + u * STRIDE + grp;
      valid[u] = t < t1;
      if (valid[u]) {
        const int64_t row = (int64_t)table[t / block_size] * block_size + t % block_size;
        const int64_t index = (row * kv_heads + kvh) * D + sub * 8;
        load_kv<T, D>(k_cache, index, kf[u]);
        load_kv<T, D>(v_cache, index, vf[u]);
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) kf[u][i] = vf[u][i] = 0.f;
      }
    }
#pragma unroll
    for (int u = 0; u < kDecodeUnroll; ++u) {
#pragma unroll
      for (int h = 0; h < HEADS; ++h) {
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) s += qf[h][i] * kf[u][i];
#pragma unroll
        for (int o = LANES / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (valid[u]) {
          const float m_new = fmaxf(m[h], s);
          const float alpha = exp2f(m[h] - m_new);  // 0 on the first token (m = -inf)
          const float p = exp2f(s - m_new);
          l[h] = l[h] * alpha + p;
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[h][i] = acc[h][i] * alpha + p * vf[u][i];
          m[h] = m_new;
        }
      }
    }
  }

  const int g = warp * TPW + grp;
#pragma unroll
  for (int h = 0; h < HEADS; ++h) {
    if (sub == 0) {
      s_m[g][h] = m[h];
      s_l[g][h] = l[h];
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) s_acc[g][h][sub * 8 + i] = acc[h][i];
  }
  __syncthreads();
  for (int e = threadIdx.x; e < nh * D; e += blockDim.x) {
    const int h = e / D, d = e % D;
    float mx = -INFINITY;
    for (int j = 0; j < GROUPS; ++j) mx = fmaxf(mx, s_m[j][h]);
    float sum = 0.f, o = 0.f;
    if (mx != -INFINITY) {
      for (int j = 0; j < GROUPS; ++j) {
        const float w = exp2f(s_m[j][h] - mx);
        sum += s_l[j][h] * w;
        o += s_acc[j][h][d] * w;
      }
    }
    const float value = sum > 0.f ? o / sum : 0.f;
    const int head = h0 + h;
    if (num_splits == 1) {
      out[(int64_t)seq * heads * D + head * D + d] = Math<T>::from_float(value);
    } else {
      const int64_t part = ((int64_t)seq * heads + head) * num_splits + split;
      split_out[part * D + d] = value;
      if (d == 0) split_lse[part] = sum > 0.f ? mx + log2f(sum) : -INFINITY;
    }
  }
}

template <typename T, int D, int HEADS>
static int launch_decode(void* out, const void* q, int q_stride, const void* k_cache,
                         const void* v_cache, const int32_t* block_tables, int bt_stride,
                         const int32_t* kv_lens, int seqs, int heads, int kv_heads,
                         int block_size, float scale, int window, int num_splits,
                         float* split_out, float* split_lse, cudaStream_t stream) {
  const int group = heads / kv_heads;
  dim3 grid(kv_heads * ((group + HEADS - 1) / HEADS), seqs, num_splits);
  return launch("decode_attention_simt", decode_attention_simt_kernel<T, D, HEADS>, grid,
                dim3(kDecodeWarps * 32), stream, (T*)out, (const T*)q, q_stride,
                (const T*)k_cache, (const T*)v_cache, block_tables, bt_stride, kv_lens, heads,
                kv_heads, block_size, scale * 1.4426950408889634f, window, num_splits,
                split_out, split_lse);
}

template <typename T, int D>
static int decode_for_dim(int group, void* out, const void* q, int q_stride, const void* kc,
                          const void* vc, const int32_t* bt, int bt_stride,
                          const int32_t* kv_lens, int seqs, int heads, int kv_heads, int bs,
                          float scale, int window, int splits, float* so, float* sl,
                          cudaStream_t stream) {
  // The fewest heads per block that cover the group in one pass (8 at most: registers).
  if (group == 1)
    return launch_decode<T, D, 1>(out, q, q_stride, kc, vc, bt, bt_stride, kv_lens, seqs,
                                  heads, kv_heads, bs, scale, window, splits, so, sl, stream);
  if (group == 2)
    return launch_decode<T, D, 2>(out, q, q_stride, kc, vc, bt, bt_stride, kv_lens, seqs,
                                  heads, kv_heads, bs, scale, window, splits, so, sl, stream);
  if (group <= 4)
    return launch_decode<T, D, 4>(out, q, q_stride, kc, vc, bt, bt_stride, kv_lens, seqs,
                                  heads, kv_heads, bs, scale, window, splits, so, sl, stream);
  return launch_decode<T, D, kDecodeMaxHeads>(out, q, q_stride, kc, vc, bt, bt_stride, kv_lens,
                                              seqs, heads, kv_heads, bs, scale, window, splits,
                                              so, sl, stream);
}

int decode_attention_simt(int dtype, void* out, const void* q, int q_stride,
                          const void* k_cache, const void* v_cache, const int32_t* block_tables,
                          int bt_stride, const int32_t* kv_lens, int seqs, int heads,
                          int kv_heads, int head_dim, int block_size, float scale, int window,
                          int num_splits, float* split_out, float* split_lse,
                          cudaStream_t stream) {
  const int group = heads / kv_heads;
  return TM_DISPATCH_DTYPE(dtype, [&] {
    if (head_dim == 64)
      return decode_for_dim<T, 64>(group, out, q, q_stride, k_cache, v_cache, block_tables,
                                   bt_stride, kv_lens, seqs, heads, kv_heads, block_size, scale,
                                   window, num_splits, split_out, split_lse, stream);
    return decode_for_dim<T, 128>(group, out, q, q_stride, k_cache, v_cache, block_tables,
                                  bt_stride, kv_lens, seqs, heads, kv_heads, block_size, scale,
                                  window, num_splits, split_out, split_lse, stream);
  });
}

}  // namespace turbomind
