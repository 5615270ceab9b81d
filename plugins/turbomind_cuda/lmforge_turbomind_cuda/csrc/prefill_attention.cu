// Paged prefill attention over a cached prefix, flash-attention style, on the tensor cores
// (mma.sync m16n8k16, sm_80 and later).
//
// A block computes one tile of 64 query rows of one sequence for one K/V head: the rows are
// 64 / group query positions times the group's query heads (row r: position r / group, head
// r % group), so each K/V tile is read once for the whole group. Each of its four warps owns 16
// rows. K and V tiles of 64 tokens are gathered from the paged cache into
// shared memory (the prompt's own K/V were written there by the RoPE kernel first, so prefix
// and new tokens are read the same way), two stages deep: cp.async fetches the next tile while
// the tensor cores work on this one. Scores, the online softmax and the output accumulator
// stay in registers: the m16n8k16 accumulator layout (rows lane/4 and lane/4 + 8, columns
// 2 * (lane % 4) + {0, 1}) is the A-operand layout of the P @ V product, so P never leaves them.
// K and V fragments come from shared memory through ldmatrix (V transposed on the way), four
// 8x8 matrices per instruction. Blocks run the longest (last) tiles first, so the short ones
// fill the tail.
// Queries sit at positions kv_len - q_len + i and see keys at or before their position (and,
// with a sliding window, within it).
#include <math.h>

#include "mma.cuh"

namespace turbomind {

constexpr int kTileM = 64, kTileN = 64, kPrefillWarps = 4, kStages = 2;

template <int D> constexpr size_t prefill_smem_bytes() {
  return (size_t)2 * kStages * kTileN * (D + 8) * 2;  // K and V, 16-bit, padded rows
}

template <typename T, int D>
__global__ void __launch_bounds__(kPrefillWarps * 32)
prefill_attention_kernel(T* out, const T* q, int q_stride, const T* k_cache, const T* v_cache,
                         const int32_t* block_tables, int bt_stride, const int32_t* kv_lens,
                         const int32_t* q_starts, const int32_t* tile_seq,
                         const int32_t* tile_start, int heads, int kv_heads, int block_size,
                         float scale_log2, int window) {
  constexpr int LD = D + 8;  // padded rows: the fragment loads hit 32 distinct banks
  extern __shared__ __align__(16) unsigned char smem[];
  using Tile = T[kTileN][LD];
  Tile* sk = reinterpret_cast<Tile*>(smem);  // [kStages] K tiles, then [kStages] V tiles
  Tile* sv = sk + kStages;
  pdl_begin();

  const int tile = gridDim.x - 1 - blockIdx.x;
  const int seq = tile_seq[tile], m0 = tile_start[tile];
  const int kvh = blockIdx.y, group = heads / kv_heads, span = kTileM / group;
  const int row0 = q_starts[seq], q_len = q_starts[seq + 1] - row0;
  const int kv_len = kv_lens[seq], prefix = kv_len - q_len;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int32_t* table = block_tables + (int64_t)seq * bt_stride;

  // This warp's two rows per lane: query index (in the sequence), head, and whether it exists.
  const int ra = warp * 16 + g, rb = ra + 8;
  const int qa = m0 + ra / group, qb = m0 + rb / group;
  const int ha = kvh * group + ra % group, hb = kvh * group + rb % group;
  const bool va = ra < span * group && qa < q_len, vb = rb < span * group && qb < q_len;
  // The warp's 16 rows as A fragments, one per 16 columns of head_dim.
  uint32_t qf[D / 16][4];
  {
    const T* pa = q + (int64_t)(row0 + qa) * q_stride + ha * D;
    const T* pb = q + (int64_t)(row0 + qb) * q_stride + hb * D;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int c = kk * 16 + t * 2;
      qf[kk][0] = va ? load32(pa + c) : 0u;
      qf[kk][1] = vb ? load32(pb + c) : 0u;
      qf[kk][2] = va ? load32(pa + c + 8) : 0u;
      qf[kk][3] = vb ? load32(pb + c + 8) : 0u;
    }
  }
  const int pos_a = prefix + qa, pos_b = prefix + qb;

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.f, l_b = 0.f;

  const int last_q = min(m0 + span, q_len) - 1;
  const int n_end = min(kv_len, prefix + last_q + 1);
  int n_begin = window > 0 ? max(0, prefix + m0 - window + 1) : 0;
  n_begin = n_begin / kTileN * kTileN;

  // Gather a K and V tile into a stage: 16-byte chunks, consecutive threads along a token's
  // row; tokens past the context read as zeros. Always one commit, so the group count is fixed.
  auto fetch = [&](int stage, int n0) {
    if (n0 < n_end) {
      for (int c = threadIdx.x; c < kTileN * D / 8; c += blockDim.x) {
        const int j = c / (D / 8), part = (c % (D / 8)) * 8;
        const int tok = n0 + j;
        int64_t index = 0;
        if (tok < kv_len) {
          const int64_t r = (int64_t)table[tok / block_size] * block_size + tok % block_size;
          index = (r * kv_heads + kvh) * D + part;
        }
        const int bytes = tok < kv_len ? 16 : 0;
        cp_async16(&sk[stage][j][part], k_cache + index, bytes);
        cp_async16(&sv[stage][j][part], v_cache + index, bytes);
      }
    }
    cp_async_commit();
  };

  fetch(0, n_begin);
  int stage = 0;
  for (int n0 = n_begin; n0 < n_end; n0 += kTileN, stage ^= 1) {
    // The other stage was last read in the previous iteration, which ended at a barrier.
    fetch(stage ^ 1, n0 + kTileN);
    cp_async_wait_one();  // this tile's copies (all but the newest group) have landed
    __syncthreads();

    // S = Q K^T for 8 groups of 8 keys: one ldmatrix gives the B fragments of two 16-column
    // steps of head_dim (matrix i: keys j*8 .. j*8+7, columns kk*16 + 8i .. + 7).
    float s[kTileN / 8][4];
#pragma unroll
    for (int j = 0; j < kTileN / 8; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; kk += 2) {
        uint32_t b[4];
        ldmatrix_x4(b, &sk[stage][j * 8 + (lane & 7)][kk * 16 + (lane >> 3) * 8]);
        Mma<T>::run(s[j], qf[kk], b[0], b[1]);
        Mma<T>::run(s[j], qf[kk + 1], b[2], b[3]);
      }
    }
    // Mask, scale (log2 domain) and the row maxima; a row's 4 lanes share it.
    float mx_a = m_a, mx_b = m_b;
#pragma unroll
    for (int j = 0; j < kTileN / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = n0 + j * 8 + t * 2 + (e & 1);
        const int pos = e < 2 ? pos_a : pos_b;
        const bool ok = key <= pos && key < kv_len && (window <= 0 || pos - key < window);
        s[j][e] = ok ? s[j][e] * scale_log2 : -INFINITY;
      }
      mx_a = fmaxf(mx_a, fmaxf(s[j][0], s[j][1]));
      mx_b = fmaxf(mx_b, fmaxf(s[j][2], s[j][3]));
    }
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
      mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, off));
      mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, off));
    }
    // A fully masked row keeps max -inf; subtracting 0 then leaves its probabilities at 0.
    const float base_a = mx_a == -INFINITY ? 0.f : mx_a;
    const float base_b = mx_b == -INFINITY ? 0.f : mx_b;
    const float alpha_a = exp2f(m_a - base_a), alpha_b = exp2f(m_b - base_b);
    m_a = mx_a;
    m_b = mx_b;
    float sum_a = 0.f, sum_b = 0.f;
#pragma unroll
    for (int j = 0; j < kTileN / 8; ++j) {
      s[j][0] = exp2f(s[j][0] - base_a);
      s[j][1] = exp2f(s[j][1] - base_a);
      s[j][2] = exp2f(s[j][2] - base_b);
      s[j][3] = exp2f(s[j][3] - base_b);
      sum_a += s[j][0] + s[j][1];
      sum_b += s[j][2] + s[j][3];
    }
    l_a = l_a * alpha_a + sum_a;
    l_b = l_b * alpha_b + sum_b;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      o[i][0] *= alpha_a;
      o[i][1] *= alpha_a;
      o[i][2] *= alpha_b;
      o[i][3] *= alpha_b;
    }
    // O += P V, 16 keys at a time; P comes straight from the score accumulators.
#pragma unroll
    for (int kk = 0; kk < kTileN / 16; ++kk) {
      uint32_t p[4];
      p[0] = Math<T>::pack(s[2 * kk][0], s[2 * kk][1]);
      p[1] = Math<T>::pack(s[2 * kk][2], s[2 * kk][3]);
      p[2] = Math<T>::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      p[3] = Math<T>::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      // Transposed load of matrices (keys kk*16 + 8 (m % 2) .. + 7, dims of tile i + m / 2)
      // for m = 0 .. 3: this lane gets keys 2 (lane % 4) + {0, 1} of column lane / 4, the B
      // fragments of dim tiles i and i + 1.
      const int key = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
      for (int i = 0; i < D / 8; i += 2) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, &sv[stage][key][(i + (lane >> 4)) * 8]);
        Mma<T>::run(o[i], p, b[0], b[1]);
        Mma<T>::run(o[i + 1], p, b[2], b[3]);
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int off = 1; off < 4; off <<= 1) {
    l_a += __shfl_xor_sync(0xffffffffu, l_a, off);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, off);
  }
  const float inv_a = l_a > 0.f ? 1.f / l_a : 0.f, inv_b = l_b > 0.f ? 1.f / l_b : 0.f;
  T* oa = out + (int64_t)(row0 + qa) * heads * D + ha * D;
  T* ob = out + (int64_t)(row0 + qb) * heads * D + hb * D;
#pragma unroll
  for (int i = 0; i < D / 8; ++i) {
    const int c = i * 8 + t * 2;
    if (va) *reinterpret_cast<uint32_t*>(oa + c) = Math<T>::pack(o[i][0] * inv_a, o[i][1] * inv_a);
    if (vb) *reinterpret_cast<uint32_t*>(ob + c) = Math<T>::pack(o[i][2] * inv_b, o[i][3] * inv_b);
  }
}

int prefill_attention(int dtype, void* out, const void* q, int q_stride, const void* k_cache,
                      const void* v_cache, const int32_t* block_tables, int bt_stride,
                      const int32_t* kv_lens, const int32_t* q_starts, const int32_t* tile_seq,
                      const int32_t* tile_start, int num_tiles, int heads, int kv_heads,
                      int head_dim, int block_size, float scale, int window,
                      cudaStream_t stream) {
  if (num_tiles == 0) return 0;
  const float scale_log2 = scale * 1.4426950408889634f;
  if (kTileM / (heads / kv_heads) < 1)
    return fail("Groups of %d query heads per key/value head are more than a prefill tile's "
                "%d rows.", heads / kv_heads, kTileM);
  dim3 grid(num_tiles, kv_heads);
  return TM_DISPATCH_DTYPE(dtype, [&] {
    auto kernel = head_dim == 64 ? prefill_attention_kernel<T, 64>
                                 : prefill_attention_kernel<T, 128>;
    const size_t smem = head_dim == 64 ? prefill_smem_bytes<64>() : prefill_smem_bytes<128>();
    // Above 48 KB a kernel needs its limit raised once (per device; cheap to repeat).
    const cudaError_t err = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (err != cudaSuccess)
      return fail("The prefill_attention kernel cannot have %d bytes of shared memory: %s.",
                  (int)smem, cudaGetErrorString(err));
    return launch_smem("prefill_attention", kernel, grid, dim3(kPrefillWarps * 32), smem, stream,
                       (T*)out, (const T*)q, q_stride, (const T*)k_cache, (const T*)v_cache,
                       block_tables, bt_stride, kv_lens, q_starts, tile_seq, tile_start, heads,
                       kv_heads, block_size, scale_log2, window);
  });
}

}  // namespace turbomind
