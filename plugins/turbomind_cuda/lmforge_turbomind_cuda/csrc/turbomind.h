// The library's C ABI: plain structs of device pointers and sizes, so any Python (ctypes) or
// torch version can drive it. Every function returns 0 on success; on failure a non-zero code,
// and tm_last_error() says why in one sentence.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { TM_FLOAT16 = 0, TM_BFLOAT16 = 1 };

// One decoder layer's weights in the converted layout (row-major [out, in] matrices):
// qkv rows are the query heads, then the key heads, then the value heads; gate_up rows are the
// gate projection, then the up projection. k_cache / v_cache: [num_blocks, block_size,
// num_kv_heads, head_dim].
typedef struct {
  const void* input_norm;  // [hidden]
  const void* qkv;         // [(heads + 2 * kv_heads) * head_dim, hidden]
  const void* qkv_bias;    // [(heads + 2 * kv_heads) * head_dim] or NULL
  const void* o;           // [hidden, heads * head_dim]
  const void* post_norm;   // [hidden]
  const void* gate_up;     // [2 * inter, hidden]
  const void* down;        // [hidden, inter]
  void* k_cache;
  void* v_cache;
} TmLayer;

// A model and the buffers one step works in, all allocated once by the caller.
typedef struct {
  int32_t device; // CUDA device index the buffers live on
  int32_t dtype;  // TM_FLOAT16 or TM_BFLOAT16
  int32_t num_layers, hidden, num_heads, num_kv_heads, head_dim, inter, vocab;
  float norm_eps;
  int32_t sliding_window;  // 0: none
  int32_t block_size;
  int32_t max_tokens;   // rows of the activation buffers
  int32_t max_seqs;     // rows of the split-K buffers
  int32_t max_splits;   // splits per sequence the split-K buffers hold
  const TmLayer* layers;  // host array of num_layers
  const void* embed;      // [vocab, hidden]
  const void* final_norm; // [hidden]
  const void* lm_head;    // [vocab, hidden]
  const float* inv_freq;  // [head_dim / 2] rotary inverse frequencies
  // Activation buffers, [max_tokens, width] each.
  void* x;         // width hidden: a block's output
  void* residual;  // width hidden
  void* normed;    // width hidden
  void* qkv_out;   // width (heads + 2 * kv_heads) * head_dim
  void* attn_out;  // width heads * head_dim
  void* gate_up_out;  // width 2 * inter
  void* act;       // width inter
  float* split_out;   // [max_seqs, heads, max_splits, head_dim]
  float* split_lse;   // [max_seqs, heads, max_splits]
  void* gemm_workspace;
  size_t gemm_workspace_bytes;
} TmModelDesc;

// One forward step. Sequences 0 .. num_decode - 1 have one new token each (rows 0 ..
// num_decode - 1); the others are prompt chunks, cut into tiles of 64 / (heads / kv_heads)
// query positions for the prefill kernel (tile_seq / tile_start, built by the caller). All
// arrays are on the device.
typedef struct {
  int32_t num_tokens, num_seqs, num_decode;
  int32_t num_splits;          // split-K parts of the decode kernel (<= max_splits)
  int32_t num_prefill_tiles;
  int32_t num_logits;
  int32_t block_table_stride;  // entries per row of block_tables
  const int64_t* input_ids;    // [num_tokens]
  const int32_t* positions;    // [num_tokens]
  const int32_t* slots;        // [num_tokens] cache slot (block * block_size + offset); -1 skips
  const int32_t* block_tables; // [num_seqs, block_table_stride]
  const int32_t* kv_lens;      // [num_seqs]
  const int32_t* q_starts;     // [num_seqs + 1] first token row of each sequence
  const int32_t* tile_seq;     // [num_prefill_tiles]
  const int32_t* tile_start;   // [num_prefill_tiles] first query of the tile in its sequence
  const int32_t* logit_rows;   // [num_logits]
  void* logits_lowp;           // [num_logits, vocab] in the model dtype
  float* logits;               // [num_logits, vocab]
} TmStep;

const char* tm_last_error(void);
// CUDA runtime version the library was built with, and its targets ("80,86,89,90a").
int tm_build_info(int* cuda_version, char* archs, int archs_len);
// Whether the library has machine code for this device (0) or not (non-zero).
int tm_probe_device(int device);
// cuBLASLt is loaded at run time from the given path (the one the caller's CUDA stack uses).
int tm_load_cublaslt(const char* path);

// Validation without a GPU: shapes, alignments and pointers.
int tm_check_model(const TmModelDesc* desc);
int tm_check_step(const TmModelDesc* desc, const TmStep* step);

// A model handle keeps a copy of desc (and of its layer array).
int tm_model_create(const TmModelDesc* desc, void** handle);
int tm_model_destroy(void* handle);
// The whole forward step, queued on `stream`: embedding, every layer, final norm, lm_head.
int tm_forward(void* handle, const TmStep* step, void* stream);

// Single kernels, for tests and benchmarks against their PyTorch references.
int tm_embedding(int dtype, void* out, const void* embed, const int64_t* ids, int tokens,
                 int hidden, int vocab, void* stream);
// out[r] = norm(x[i] (+ residual[i], written back to residual[i])) * w with i = index[r] (or r).
int tm_rms_norm(int dtype, void* out, void* residual, const void* x, const void* w,
                const int32_t* index, int rows, int hidden, float eps, void* stream);
int tm_silu_mul(int dtype, void* out, const void* gate_up, int tokens, int inter, void* stream);
// Adds bias, rotates q (in place) and k, writes k and v into the paged cache.
int tm_rope_kv(int dtype, void* qkv, const void* bias, const float* inv_freq,
               const int32_t* positions, const int32_t* slots, void* k_cache, void* v_cache,
               int tokens, int heads, int kv_heads, int head_dim, void* stream);
int tm_decode_attention(int dtype, void* out, const void* q, int q_stride, const void* k_cache,
                        const void* v_cache, const int32_t* block_tables, int block_table_stride,
                        const int32_t* kv_lens, int seqs, int heads, int kv_heads, int head_dim,
                        int block_size, float scale, int window, int num_splits,
                        float* split_out, float* split_lse, void* stream);
int tm_prefill_attention(int dtype, void* out, const void* q, int q_stride, const void* k_cache,
                         const void* v_cache, const int32_t* block_tables,
                         int block_table_stride, const int32_t* kv_lens,
                         const int32_t* q_starts, const int32_t* tile_seq,
                         const int32_t* tile_start, int num_tiles, int heads, int kv_heads,
                         int head_dim, int block_size, float scale, int window, void* stream);
// y[M, N] = x[M, K] @ w[N, K]^T. path: 0 picks, 1 the GEMV kernel (M <= 8), 2 cuBLASLt.
int tm_linear(int dtype, void* y, const void* x, const void* w, int m, int n, int k, int path,
              void* workspace, size_t workspace_bytes, void* stream);
int tm_to_float(int dtype, float* out, const void* in, int64_t count, void* stream);

#ifdef __cplusplus
}
#endif
