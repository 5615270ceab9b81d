// Host launchers of the kernels (namespace turbomind); the C entry points in api.cu check arguments and
// call these.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

namespace turbomind {
int embedding(int dtype, void* out, const void* embed, const int64_t* ids, int tokens,
              int hidden, int vocab, cudaStream_t stream);
int rms_norm(int dtype, void* out, void* residual, const void* x, const void* w,
             const int32_t* index, int rows, int hidden, float eps, cudaStream_t stream);
int silu_mul(int dtype, void* out, const void* gate_up, int tokens, int inter,
             cudaStream_t stream);
int to_float(int dtype, float* out, const void* in, int64_t count, cudaStream_t stream);
int rope_kv(int dtype, void* qkv, const void* bias, const float* inv_freq,
            const int32_t* positions, const int32_t* slots, void* k_cache, void* v_cache,
            int tokens, int heads, int kv_heads, int head_dim, cudaStream_t stream);
int decode_attention(int dtype, void* out, const void* q, int q_stride, const void* k_cache,
                     const void* v_cache, const int32_t* block_tables, int bt_stride,
                     const int32_t* kv_lens, int seqs, int heads, int kv_heads, int head_dim,
                     int block_size, float scale, int window, int num_splits, float* split_out,
                     float* split_lse, cudaStream_t stream);
// The first pass of decode_attention on the CUDA cores (its fallback): writes `out` with one
// split, else each split's partial output and log-sum-exp for the merge kernel.
int decode_attention_simt(int dtype, void* out, const void* q, int q_stride,
                          const void* k_cache, const void* v_cache, const int32_t* block_tables,
                          int bt_stride, const int32_t* kv_lens, int seqs, int heads,
                          int kv_heads, int head_dim, int block_size, float scale, int window,
                          int num_splits, float* split_out, float* split_lse,
                          cudaStream_t stream);
int prefill_attention(int dtype, void* out, const void* q, int q_stride, const void* k_cache,
                      const void* v_cache, const int32_t* block_tables, int bt_stride,
                      const int32_t* kv_lens, const int32_t* q_starts, const int32_t* tile_seq,
                      const int32_t* tile_start, int num_tiles, int heads, int kv_heads,
                      int head_dim, int block_size, float scale, int window,
                      cudaStream_t stream);
int gemv(int dtype, void* y, const void* x, const void* w, int m, int n, int k,
         cudaStream_t stream);
int load_cublaslt(const char* path);
int cublaslt_matmul(int dtype, void* y, const void* x, const void* w, int m, int n, int k,
                    void* workspace, size_t workspace_bytes, cudaStream_t stream);
// GEMV up to this many rows, cuBLASLt above: every row re-reads the activations from L1, so
// past a few rows cuBLASLt's tiles win (to be tuned on the H200).
constexpr int kGemvMaxRows = 4;
}  // namespace turbomind
