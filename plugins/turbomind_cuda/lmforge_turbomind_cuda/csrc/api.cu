// The C entry points of turbomind.h: errors, build facts, and the single kernels (checked, then
// launched).
#include <stdlib.h>
#include <string.h>

#include "checks.h"
#include "kernels.h"

#ifndef TM_ARCHS
#define TM_ARCHS "unknown"
#endif

namespace turbomind {

static thread_local char last_error[512];

int fail(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  vsnprintf(last_error, sizeof(last_error), fmt, args);
  va_end(args);
  return 1;
}

__global__ void probe_kernel() {}

bool pdl_enabled() {
  static int enabled[64] = {};  // per device: 0 unknown, 1 yes, 2 no
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64) return false;
  if (enabled[device] == 0) {
    const char* env = getenv("LMFORGE_TURBOMIND_PDL");
    int major = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    enabled[device] = (major >= 9 && !(env && strcmp(env, "0") == 0)) ? 1 : 2;
  }
  return enabled[device] == 1;
}

}  // namespace turbomind

using namespace turbomind;

extern "C" {

const char* tm_last_error(void) { return last_error; }

int tm_build_info(int* cuda_version, char* archs, int archs_len) {
  *cuda_version = CUDART_VERSION;
  snprintf(archs, archs_len, "%s", TM_ARCHS);
  return 0;
}

int tm_probe_device(int device) {
  cudaFuncAttributes attr;
  cudaError_t err = cudaSetDevice(device);
  if (err == cudaSuccess) err = cudaFuncGetAttributes(&attr, probe_kernel);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return fail("%s", cudaGetErrorString(err));
  }
  return 0;
}

int tm_load_cublaslt(const char* path) { return load_cublaslt(path); }

int tm_check_model(const TmModelDesc* desc) { return check_model(desc); }

int tm_check_step(const TmModelDesc* desc, const TmStep* step) { return check_step(desc, step); }

int tm_embedding(int dtype, void* out, const void* embed, const int64_t* ids, int tokens,
                 int hidden, int vocab, void* stream) {
  if (int e = check_width("hidden", hidden)) return e;
  if (int e = check_ptr("out", out) || check_ptr("embed", embed)) return e;
  return embedding(dtype, out, embed, ids, tokens, hidden, vocab, as_stream(stream));
}

int tm_rms_norm(int dtype, void* out, void* residual, const void* x, const void* w,
                const int32_t* index, int rows, int hidden, float eps, void* stream) {
  if (int e = check_width("hidden", hidden)) return e;
  if (int e = check_ptr("out", out) || check_ptr("x", x) || check_ptr("w", w)) return e;
  if (residual && !aligned16(residual)) return fail("residual is not 16-byte aligned.");
  return rms_norm(dtype, out, residual, x, w, index, rows, hidden, eps, as_stream(stream));
}

int tm_silu_mul(int dtype, void* out, const void* gate_up, int tokens, int inter,
                void* stream) {
  if (int e = check_width("inter", inter)) return e;
  if (int e = check_ptr("out", out) || check_ptr("gate_up", gate_up)) return e;
  return silu_mul(dtype, out, gate_up, tokens, inter, as_stream(stream));
}

int tm_rope_kv(int dtype, void* qkv, const void* bias, const float* inv_freq,
               const int32_t* positions, const int32_t* slots, void* k_cache, void* v_cache,
               int tokens, int heads, int kv_heads, int head_dim, void* stream) {
  if (int e = check_heads(heads, kv_heads, head_dim)) return e;
  if (!qkv || !inv_freq || !positions || !slots || !k_cache || !v_cache)
    return fail("rope_kv needs qkv, inv_freq, positions, slots and both caches.");
  return rope_kv(dtype, qkv, bias, inv_freq, positions, slots, k_cache, v_cache, tokens, heads,
                 kv_heads, head_dim, as_stream(stream));
}

int tm_decode_attention(int dtype, void* out, const void* q, int q_stride, const void* k_cache,
                        const void* v_cache, const int32_t* block_tables, int block_table_stride,
                        const int32_t* kv_lens, int seqs, int heads, int kv_heads, int head_dim,
                        int block_size, float scale, int window, int num_splits,
                        float* split_out, float* split_lse, void* stream) {
  if (int e = check_heads(heads, kv_heads, head_dim)) return e;
  if (int e = check_ptr("out", out) || check_ptr("q", q) || check_ptr("k_cache", k_cache) ||
              check_ptr("v_cache", v_cache))
    return e;
  if (q_stride % 8 != 0) return fail("q_stride %d is not a multiple of 8.", q_stride);
  if (num_splits < 1) return fail("num_splits is %d; it must be at least 1.", num_splits);
  if (num_splits > 1 && (!split_out || !split_lse))
    return fail("Several splits need split_out and split_lse buffers.");
  if (block_size < 1) return fail("block_size is %d; it must be at least 1.", block_size);
  return decode_attention(dtype, out, q, q_stride, k_cache, v_cache, block_tables,
                          block_table_stride, kv_lens, seqs, heads, kv_heads, head_dim,
                          block_size, scale, window, num_splits, split_out, split_lse,
                          as_stream(stream));
}

int tm_prefill_attention(int dtype, void* out, const void* q, int q_stride, const void* k_cache,
                         const void* v_cache, const int32_t* block_tables,
                         int block_table_stride, const int32_t* kv_lens,
                         const int32_t* q_starts, const int32_t* tile_seq,
                         const int32_t* tile_start, int num_tiles, int heads, int kv_heads,
                         int head_dim, int block_size, float scale, int window, void* stream) {
  if (int e = check_heads(heads, kv_heads, head_dim)) return e;
  if (int e = check_ptr("out", out) || check_ptr("q", q) || check_ptr("k_cache", k_cache) ||
              check_ptr("v_cache", v_cache))
    return e;
  if (q_stride % 8 != 0) return fail("q_stride %d is not a multiple of 8.", q_stride);
  if (block_size < 1) return fail("block_size is %d; it must be at least 1.", block_size);
  return prefill_attention(dtype, out, q, q_stride, k_cache, v_cache, block_tables,
                           block_table_stride, kv_lens, q_starts, tile_seq, tile_start,
                           num_tiles, heads, kv_heads, head_dim, block_size, scale, window,
                           as_stream(stream));
}

int tm_linear(int dtype, void* y, const void* x, const void* w, int m, int n, int k, int path,
              void* workspace, size_t workspace_bytes, void* stream) {
  if (int e = check_dtype(dtype)) return e;
  if (int e = check_width("k", k)) return e;
  if (int e = check_ptr("y", y) || check_ptr("x", x) || check_ptr("w", w)) return e;
  if (m < 0 || n < 1) return fail("A %dx%d output is empty or negative.", m, n);
  if (m == 0) return 0;
  if (path == 1 || (path == 0 && m <= kGemvMaxRows))
    return gemv(dtype, y, x, w, m, n, k, as_stream(stream));
  return cublaslt_matmul(dtype, y, x, w, m, n, k, workspace, workspace_bytes,
                         as_stream(stream));
}

int tm_to_float(int dtype, float* out, const void* in, int64_t count, void* stream) {
  if (!out || !in) return fail("to_float needs out and in.");
  return to_float(dtype, out, in, count, as_stream(stream));
}

}  // extern "C"
