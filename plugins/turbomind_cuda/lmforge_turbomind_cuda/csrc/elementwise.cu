// Row-wise kernels: embedding gather, RMSNorm fused with the residual add, SiLU-and-mul, and the
// cast of the logits to float32. Each rounds where transformers' 16-bit modules round, so that
// greedy tokens match theirs.
#include "common.cuh"

namespace turbomind {

template <typename T>
__global__ void embedding_kernel(T* out, const T* embed, const int64_t* ids, int hidden,
                                 int vocab) {
  pdl_begin();
  const int64_t id = ids[blockIdx.x];
  T* dst = out + (int64_t)blockIdx.x * hidden;
  const bool valid = id >= 0 && id < vocab;
  const T* src = embed + (valid ? id : 0) * (int64_t)hidden;
  for (int i = threadIdx.x * 8; i < hidden; i += blockDim.x * 8) {
    Vec8<T> v;
    if (valid) v.load(src + i); else v.raw = make_uint4(0, 0, 0, 0);
    v.store(dst + i);
  }
}

// One block per output row. With a residual, the row is residual + x (rounded, as a 16-bit
// add), which is written back to the residual stream before it is normalized.
template <typename T>
__global__ void rms_norm_kernel(T* out, T* residual, const T* x, const T* w,
                                const int32_t* index, int hidden, float eps) {
  __shared__ float scratch[32];
  pdl_begin();
  const int64_t src = index ? index[blockIdx.x] : blockIdx.x;
  const T* xr = x + src * hidden;
  T* rr = residual ? residual + src * hidden : nullptr;
  float sq = 0.f;
  for (int i = threadIdx.x * 8; i < hidden; i += blockDim.x * 8) {
    Vec8<T> v;
    float f[8];
    v.load(xr + i);
    v.to_float(f);
    if (rr) {
      Vec8<T> r;
      float g[8];
      r.load(rr + i);
      r.to_float(g);
#pragma unroll
      for (int j = 0; j < 8; ++j) f[j] = round_to<T>(f[j] + g[j]);
      r.from_float(f);
      r.store(rr + i);
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) sq += f[j] * f[j];
  }
  const float inv = rsqrtf(block_sum(sq, scratch) / hidden + eps);
  const T* in = rr ? rr : xr;
  T* dst = out + (int64_t)blockIdx.x * hidden;
  for (int i = threadIdx.x * 8; i < hidden; i += blockDim.x * 8) {
    Vec8<T> v, wv;
    float f[8], g[8];
    v.load(in + i);
    wv.load(w + i);
    v.to_float(f);
    wv.to_float(g);
#pragma unroll
    for (int j = 0; j < 8; ++j) f[j] = g[j] * round_to<T>(f[j] * inv);
    v.from_float(f);
    v.store(dst + i);
  }
}

template <typename T>
__global__ void silu_mul_kernel(T* out, const T* gate_up, int inter) {
  pdl_begin();
  const T* g = gate_up + (int64_t)blockIdx.x * 2 * inter;
  const T* u = g + inter;
  T* dst = out + (int64_t)blockIdx.x * inter;
  for (int i = threadIdx.x * 8; i < inter; i += blockDim.x * 8) {
    Vec8<T> gv, uv;
    float a[8], b[8];
    gv.load(g + i);
    uv.load(u + i);
    gv.to_float(a);
    uv.to_float(b);
#pragma unroll
    for (int j = 0; j < 8; ++j) a[j] = round_to<T>(a[j] / (1.f + __expf(-a[j]))) * b[j];
    gv.from_float(a);
    gv.store(dst + i);
  }
}

template <typename T>
__global__ void to_float_kernel(float* out, const T* in, int64_t count) {
  pdl_begin();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i] = Math<T>::to_float(in[i]);
}

static int row_threads(int width) {
  int t = (width / 8 + 31) / 32 * 32;
  return t < 32 ? 32 : (t > 512 ? 512 : t);
}

int embedding(int dtype, void* out, const void* embed, const int64_t* ids, int tokens,
              int hidden, int vocab, cudaStream_t stream) {
  if (tokens == 0) return 0;
  return TM_DISPATCH_DTYPE(dtype, [&] {
    return launch("embedding", embedding_kernel<T>, dim3(tokens), dim3(row_threads(hidden)),
                  stream, (T*)out, (const T*)embed, ids, hidden, vocab);
  });
}

int rms_norm(int dtype, void* out, void* residual, const void* x, const void* w,
             const int32_t* index, int rows, int hidden, float eps, cudaStream_t stream) {
  if (rows == 0) return 0;
  return TM_DISPATCH_DTYPE(dtype, [&] {
    return launch("rms_norm", rms_norm_kernel<T>, dim3(rows), dim3(row_threads(hidden)), stream,
                  (T*)out, (T*)residual, (const T*)x, (const T*)w, index, hidden, eps);
  });
}

int silu_mul(int dtype, void* out, const void* gate_up, int tokens, int inter,
             cudaStream_t stream) {
  if (tokens == 0) return 0;
  return TM_DISPATCH_DTYPE(dtype, [&] {
    return launch("silu_mul", silu_mul_kernel<T>, dim3(tokens), dim3(row_threads(inter)), stream,
                  (T*)out, (const T*)gate_up, inter);
  });
}

int to_float(int dtype, float* out, const void* in, int64_t count, cudaStream_t stream) {
  if (count == 0) return 0;
  int64_t blocks = (count + 255) / 256;
  if (blocks > 65535) blocks = 65535;
  return TM_DISPATCH_DTYPE(dtype, [&] {
    return launch("to_float", to_float_kernel<T>, dim3((int)blocks), dim3(256), stream, out,
                  (const T*)in, count);
  });
}

}  // namespace turbomind
