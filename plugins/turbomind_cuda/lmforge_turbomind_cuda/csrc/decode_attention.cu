// Paged decode attention on the tensor cores: one query token per sequence, grouped-query
// heads, split-K over the sequence (mma.sync m16n8k16, fp32 accumulators, sm_80 and later).
//
// Tiling. A block serves one sequence, one K/V head and one split of its tokens. The M rows of
// the mma are the group's query heads (row r: head h0 + r), padded with zero rows to 16; a
// group of more than 16 heads takes several blocks. Each of the four warps holds the same 16
// query rows as A fragments. The split's tokens go by in tiles of 64: the block gathers a tile's
// K and V rows through the block table into shared memory with cp.async, two stages deep (the
// next tile is in flight while this one is used). Warp w owns keys 16w .. 16w + 15 of every
// tile: S = Q K^T is two 16x8 score tiles (head_dim / 16 mma steps each), masked past the
// split's end, scaled into the log2 domain; the warp's running max, sum and output (online
// softmax) stay in registers, and since the accumulator layout of S is the A layout of P V, P
// goes from scores to 16-bit probabilities in registers and O += P V is one 16-key mma step
// per 8 output columns. K and V fragments come through ldmatrix (V transposed on the way), as
// in prefill_attention.cu. At the end the four warps' states merge through shared memory (the
// K/V stages' space) and the block writes its heads: the output itself with one split, else a
// normalized partial output and its log-sum-exp per split, which merge_splits_kernel combines.
// Padding rows and the keys past the split cost tensor-core work only: the kernel is bound by
// reading the cache, which each block reads once for the whole group.
//
// K/V rows reach shared memory only through load_kv(). An int8/int4 cache would change that
// one function: copy the packed rows (and their scales) into a staging tile the same way, and
// after the stage's wait, dequantize them into the 16-bit tile the mma loop reads, which then
// stays as it is.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "mma.cuh"

namespace turbomind {

constexpr int kDecodeRows = 16;        // query heads per block: the M of the mma
constexpr int kDecodeWarps = 4;
constexpr int kWarpKeys = 16;          // keys of a tile per warp: the K of the P V mma
constexpr int kDecodeTile = kDecodeWarps * kWarpKeys;
constexpr int kDecodeStages = 2;

template <int D> constexpr size_t decode_tiles_bytes() {
  return (size_t)2 * kDecodeStages * kDecodeTile * (D + 8) * 2;  // K and V, padded rows
}
// The merge's output rows are padded by 8 floats: a half-warp's 8-byte stores (rows g < 4,
// columns 2t) then cover the 32 banks once.
template <int D> __host__ __device__ constexpr int merge_ld() { return D + 8; }
template <int D> constexpr size_t decode_merge_bytes() {
  return (size_t)kDecodeWarps * kDecodeRows * (merge_ld<D>() + 2) * sizeof(float);  // o, max, sum
}
template <int D> constexpr size_t decode_smem_bytes() {
  return decode_tiles_bytes<D>() > decode_merge_bytes<D>() ? decode_tiles_bytes<D>()
                                                           : decode_merge_bytes<D>();
}

// Copies 8 values of a cached K or V row into the tile (zeros when !valid). The one place an
// int8/int4 cache would dequantize (see the header).
template <typename T>
__device__ __forceinline__ void load_kv(T* tile, const T* cache, int64_t index, bool valid) {
  cp_async16(tile, cache + index, valid ? 16 : 0);
}

template <typename T, int D>
__global__ void __launch_bounds__(kDecodeWarps * 32)
decode_attention_mma_kernel(T* out, const T* q, int q_stride, const T* k_cache,
                            const T* v_cache, const int32_t* block_tables, int bt_stride,
                            const int32_t* kv_lens, int heads, int kv_heads, int block_size,
                            float scale_log2, int window, int num_splits, float* split_out,
                            float* split_lse) {
  constexpr int LD = D + 8;  // padded rows: the fragment loads hit 32 distinct banks
  extern __shared__ __align__(16) unsigned char smem[];
  using Tile = T[kDecodeTile][LD];
  Tile* sk = reinterpret_cast<Tile*>(smem);  // [kDecodeStages] K tiles, then the V tiles
  Tile* sv = sk + kDecodeStages;
  pdl_begin();

  const int group = heads / kv_heads;
  const int chunks = (group + kDecodeRows - 1) / kDecodeRows;
  const int kvh = blockIdx.x / chunks;
  const int h0 = kvh * group + (blockIdx.x % chunks) * kDecodeRows;
  const int nh = min(kDecodeRows, kvh * group + group - h0);
  const int seq = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;

  // The same split of the tokens as the CUDA-core kernel (a multiple of 16 per split).
  const int kv_len = kv_lens[seq];
  const int first = window > 0 ? max(0, kv_len - window) : 0;
  const int per = ((kv_len - first + num_splits - 1) / num_splits + 15) / 16 * 16;
  const int t0 = first + split * per;
  const int t1 = min(kv_len, t0 + per);
  const int32_t* table = block_tables + (int64_t)seq * bt_stride;

  // The 16 query rows as A fragments, one per 16 columns of head_dim; this lane's rows are
  // heads h0 + g and h0 + g + 8.
  uint32_t qf[D / 16][4];
  {
    const bool va = g < nh, vb = g + 8 < nh;
    const T* pa = q + (int64_t)seq * q_stride + (int64_t)(h0 + g) * D;
    const T* pb = pa + 8 * D;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int c = kk * 16 + t * 2;
      qf[kk][0] = va ? load32(pa + c) : 0u;
      qf[kk][1] = vb ? load32(pb + c) : 0u;
      qf[kk][2] = va ? load32(pa + c + 8) : 0u;
      qf[kk][3] = vb ? load32(pb + c + 8) : 0u;
    }
  }

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.f, l_b = 0.f;

  // Gather a tile's K and V rows into a stage: 16-byte chunks, consecutive threads along a
  // token's row; tokens past the split read as zeros (P is 0 there, and 0 * 0 stays 0). Always
  // one commit, so the count of groups in flight is fixed.
  auto fetch = [&](int stage, int n0) {
    if (n0 < t1) {
      for (int c = threadIdx.x; c < kDecodeTile * D / 8; c += blockDim.x) {
        const int j = c / (D / 8), part = (c % (D / 8)) * 8;
        const int tok = n0 + j;
        const bool valid = tok < t1;
        int64_t index = 0;
        if (valid) {
          const int64_t r = (int64_t)table[tok / block_size] * block_size + tok % block_size;
          index = (r * kv_heads + kvh) * D + part;
        }
        load_kv(&sk[stage][j][part], k_cache, index, valid);
        load_kv(&sv[stage][j][part], v_cache, index, valid);
      }
    }
    cp_async_commit();
  };

  const int key0 = warp * kWarpKeys;  // this warp's keys within a tile
  fetch(0, t0);
  int stage = 0;
  for (int n0 = t0; n0 < t1; n0 += kDecodeTile, stage ^= 1) {
    // The other stage was last read in the previous iteration, which ended at a barrier.
    fetch(stage ^ 1, n0 + kDecodeTile);
    cp_async_wait_one();  // this tile's copies (all but the newest group) have landed
    __syncthreads();

    if (n0 + key0 < t1) {  // a warp whose keys are all past the split skips the tile
      // S = Q K^T for two groups of 8 keys; one ldmatrix gives the B fragments of two 16-column
      // steps of head_dim (matrix i: keys j*8 .. j*8+7, columns kk*16 + 8i .. + 7).
      float s[2][4];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk += 2) {
          uint32_t b[4];
          ldmatrix_x4(b, &sk[stage][key0 + j * 8 + (lane & 7)][kk * 16 + (lane >> 3) * 8]);
          Mma<T>::run(s[j], qf[kk], b[0], b[1]);
          Mma<T>::run(s[j], qf[kk + 1], b[2], b[3]);
        }
      }
      // Mask, scale (log2 domain) and the row maxima; a row's 4 lanes share it.
      float mx_a = m_a, mx_b = m_b;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = n0 + key0 + j * 8 + t * 2 + (e & 1);
          s[j][e] = key < t1 ? s[j][e] * scale_log2 : -INFINITY;
        }
        mx_a = fmaxf(mx_a, fmaxf(s[j][0], s[j][1]));
        mx_b = fmaxf(mx_b, fmaxf(s[j][2], s[j][3]));
      }
#pragma unroll
      for (int off = 1; off < 4; off <<= 1) {
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, off));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, off));
      }
      // The warp's first key is inside the split, so every row has a finite maximum now.
      const float alpha_a = exp2f(m_a - mx_a), alpha_b = exp2f(m_b - mx_b);
      m_a = mx_a;
      m_b = mx_b;
      float sum_a = 0.f, sum_b = 0.f;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        s[j][0] = exp2f(s[j][0] - mx_a);
        s[j][1] = exp2f(s[j][1] - mx_a);
        s[j][2] = exp2f(s[j][2] - mx_b);
        s[j][3] = exp2f(s[j][3] - mx_b);
        sum_a += s[j][0] + s[j][1];
        sum_b += s[j][2] + s[j][3];
      }
      l_a = l_a * alpha_a + sum_a;
      l_b = l_b * alpha_b + sum_b;
      // O = O * alpha + P V: P straight from the score accumulators.
      uint32_t p[4];
      p[0] = Math<T>::pack(s[0][0], s[0][1]);
      p[1] = Math<T>::pack(s[0][2], s[0][3]);
      p[2] = Math<T>::pack(s[1][0], s[1][1]);
      p[3] = Math<T>::pack(s[1][2], s[1][3]);
      // Transposed load of matrices (keys 8 (m % 2) .. + 7 of the warp's 16, dims of tile
      // i + m / 2) for m = 0 .. 3: the B fragments of output column tiles i and i + 1.
      const int key = key0 + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
      for (int i = 0; i < D / 8; i += 2) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, &sv[stage][key][(i + (lane >> 4)) * 8]);
        o[i][0] *= alpha_a;
        o[i][1] *= alpha_a;
        o[i][2] *= alpha_b;
        o[i][3] *= alpha_b;
        o[i + 1][0] *= alpha_a;
        o[i + 1][1] *= alpha_a;
        o[i + 1][2] *= alpha_b;
        o[i + 1][3] *= alpha_b;
        Mma<T>::run(o[i], p, b[0], b[1]);
        Mma<T>::run(o[i + 1], p, b[2], b[3]);
      }
    }
    __syncthreads();
  }
  cp_async_wait_all();  // only empty groups are left; the merge reuses the stages' space
  __syncthreads();

  // Each warp's state per row: running max and sum (the 4 lanes of a row hold parts of the sum)
  // and the unnormalized output.
#pragma unroll
  for (int off = 1; off < 4; off <<= 1) {
    l_a += __shfl_xor_sync(0xffffffffu, l_a, off);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, off);
  }
  constexpr int OLD = merge_ld<D>();
  float* s_o = reinterpret_cast<float*>(smem);          // [warps][rows][OLD]
  float* s_m = s_o + kDecodeWarps * kDecodeRows * OLD;  // [warps][rows]
  float* s_l = s_m + kDecodeWarps * kDecodeRows;        // [warps][rows]
  {
    float* oa = s_o + (warp * kDecodeRows + g) * OLD;
    float* ob = oa + 8 * OLD;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      const int c = i * 8 + t * 2;
      *reinterpret_cast<float2*>(oa + c) = make_float2(o[i][0], o[i][1]);
      *reinterpret_cast<float2*>(ob + c) = make_float2(o[i][2], o[i][3]);
    }
    if (t == 0) {
      s_m[warp * kDecodeRows + g] = m_a;
      s_m[warp * kDecodeRows + g + 8] = m_b;
      s_l[warp * kDecodeRows + g] = l_a;
      s_l[warp * kDecodeRows + g + 8] = l_b;
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < nh * D; e += blockDim.x) {
    const int h = e / D, d = e % D;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) mx = fmaxf(mx, s_m[w * kDecodeRows + h]);
    float sum = 0.f, acc = 0.f;
    if (mx != -INFINITY) {  // a warp (or split) that saw no key has max -inf and weight 0
#pragma unroll
      for (int w = 0; w < kDecodeWarps; ++w) {
        const float wt = exp2f(s_m[w * kDecodeRows + h] - mx);
        sum += s_l[w * kDecodeRows + h] * wt;
        acc += s_o[(w * kDecodeRows + h) * OLD + d] * wt;
      }
    }
    const float value = sum > 0.f ? acc / sum : 0.f;
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

// One block per (head, sequence): weights each split by 2^(lse - max).
template <typename T>
__global__ void merge_splits_kernel(T* out, const float* split_out, const float* split_lse,
                                    int heads, int head_dim, int num_splits) {
  pdl_begin();
  const int head = blockIdx.x, seq = blockIdx.y;
  const int64_t base = ((int64_t)seq * heads + head) * num_splits;
  float mx = -INFINITY;
  for (int s = 0; s < num_splits; ++s) mx = fmaxf(mx, split_lse[base + s]);
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float sum = 0.f, o = 0.f;
    if (mx != -INFINITY) {
      for (int s = 0; s < num_splits; ++s) {
        const float w = exp2f(split_lse[base + s] - mx);
        sum += w;
        o += w * split_out[(base + s) * head_dim + d];
      }
    }
    out[((int64_t)seq * heads + head) * head_dim + d] =
        Math<T>::from_float(sum > 0.f ? o / sum : 0.f);
  }
}

template <typename T, int D>
static int decode_attention_mma(void* out, const void* q, int q_stride, const void* k_cache,
                                const void* v_cache, const int32_t* block_tables, int bt_stride,
                                const int32_t* kv_lens, int seqs, int heads, int kv_heads,
                                int block_size, float scale, int window, int num_splits,
                                float* split_out, float* split_lse, cudaStream_t stream) {
  auto kernel = decode_attention_mma_kernel<T, D>;
  constexpr size_t smem = decode_smem_bytes<D>();
  // Above 48 KB a kernel needs its limit raised (per device; cheap to repeat).
  const cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (err != cudaSuccess)
    return fail("The decode_attention kernel cannot have %d bytes of shared memory: %s.",
                (int)smem, cudaGetErrorString(err));
  const int group = heads / kv_heads;
  dim3 grid(kv_heads * ((group + kDecodeRows - 1) / kDecodeRows), seqs, num_splits);
  return launch_smem("decode_attention", kernel, grid, dim3(kDecodeWarps * 32), smem, stream,
                     (T*)out, (const T*)q, q_stride, (const T*)k_cache, (const T*)v_cache,
                     block_tables, bt_stride, kv_lens, heads, kv_heads, block_size,
                     scale * 1.4426950408889634f, window, num_splits, split_out, split_lse);
}

// LMFORGE_TURBOMIND_DECODE=simt picks the CUDA-core kernel (read once per process).
static bool use_simt_kernel() {
  static const bool simt = [] {
    const char* env = getenv("LMFORGE_TURBOMIND_DECODE");
    return env && strcmp(env, "simt") == 0;
  }();
  return simt;
}

int decode_attention(int dtype, void* out, const void* q, int q_stride, const void* k_cache,
                     const void* v_cache, const int32_t* block_tables, int bt_stride,
                     const int32_t* kv_lens, int seqs, int heads, int kv_heads, int head_dim,
                     int block_size, float scale, int window, int num_splits, float* split_out,
                     float* split_lse, cudaStream_t stream) {
  if (seqs == 0) return 0;
  // Both kernels take the head dims check_heads() lets through: 64 and 128.
  int err;
  if (use_simt_kernel()) {
    err = decode_attention_simt(dtype, out, q, q_stride, k_cache, v_cache, block_tables,
                                bt_stride, kv_lens, seqs, heads, kv_heads, head_dim, block_size,
                                scale, window, num_splits, split_out, split_lse, stream);
  } else {
    err = TM_DISPATCH_DTYPE(dtype, [&] {
      auto pass = head_dim == 64 ? decode_attention_mma<T, 64> : decode_attention_mma<T, 128>;
      return pass(out, q, q_stride, k_cache, v_cache, block_tables, bt_stride, kv_lens, seqs,
                  heads, kv_heads, block_size, scale, window, num_splits, split_out, split_lse,
                  stream);
    });
  }
  if (err || num_splits == 1) return err;
  return TM_DISPATCH_DTYPE(dtype, [&] {
    return launch("decode_attention merge", merge_splits_kernel<T>, dim3(heads, seqs),
                  dim3(head_dim), stream, (T*)out, (const float*)split_out,
                  (const float*)split_lse, heads, head_dim, num_splits);
  });
}

}  // namespace turbomind
