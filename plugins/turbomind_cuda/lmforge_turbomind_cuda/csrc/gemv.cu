// Small-batch GEMV for decode steps: y[m, n] = x[m, :] . w[n, :] for M <= 8 rows.
//
// Decode matmuls read every weight once and do little arithmetic with it, so they are bound by
// memory bandwidth. Each warp owns an output column and streams its weight row in 16-byte
// loads, eight in flight per lane (a 4096-wide row is two round trips, not sixteen); the few
// activation rows come from L1/L2. Accumulation is in float32; one rounding on the store, as a
// GEMM would.
#include "common.cuh"

namespace turbomind {

constexpr int kGemvWarps = 8, kGemvUnroll = 8;

template <typename T, int M>
__global__ void __launch_bounds__(kGemvWarps * 32)
gemv_kernel(T* y, const T* x, const T* w, int n, int k) {
  pdl_begin();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int col = blockIdx.x * kGemvWarps + warp;
  if (col >= n) return;
  const T* wr = w + (int64_t)col * k;
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0.f;
  constexpr int STEP = 32 * 8;
  int i = lane * 8;
  for (; i + (kGemvUnroll - 1) * STEP < k; i += kGemvUnroll * STEP) {
    Vec8<T> wv[kGemvUnroll];
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) wv[u].load(wr + i + u * STEP);
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      float wf[8];
      wv[u].to_float(wf);
#pragma unroll
      for (int r = 0; r < M; ++r) {
        Vec8<T> xv;
        float xf[8];
        xv.load(x + (int64_t)r * k + i + u * STEP);
        xv.to_float(xf);
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[r] += wf[j] * xf[j];
      }
    }
  }
  for (; i < k; i += STEP) {
    Vec8<T> wv;
    float wf[8];
    wv.load(wr + i);
    wv.to_float(wf);
#pragma unroll
    for (int r = 0; r < M; ++r) {
      Vec8<T> xv;
      float xf[8];
      xv.load(x + (int64_t)r * k + i);
      xv.to_float(xf);
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[r] += wf[j] * xf[j];
    }
  }
#pragma unroll
  for (int r = 0; r < M; ++r) {
    const float v = warp_sum(acc[r]);
    if (lane == 0) y[(int64_t)r * n + col] = Math<T>::from_float(v);
  }
}

template <typename T, int M>
static int launch_gemv(void* y, const void* x, const void* w, int n, int k, cudaStream_t s) {
  return launch("gemv", gemv_kernel<T, M>, dim3((n + kGemvWarps - 1) / kGemvWarps),
                dim3(kGemvWarps * 32), s, (T*)y, (const T*)x, (const T*)w, n, k);
}

int gemv(int dtype, void* y, const void* x, const void* w, int m, int n, int k,
         cudaStream_t stream) {
  return TM_DISPATCH_DTYPE(dtype, [&] {
    switch (m) {
      case 1: return launch_gemv<T, 1>(y, x, w, n, k, stream);
      case 2: return launch_gemv<T, 2>(y, x, w, n, k, stream);
      case 3: return launch_gemv<T, 3>(y, x, w, n, k, stream);
      case 4: return launch_gemv<T, 4>(y, x, w, n, k, stream);
      case 5: return launch_gemv<T, 5>(y, x, w, n, k, stream);
      case 6: return launch_gemv<T, 6>(y, x, w, n, k, stream);
      case 7: return launch_gemv<T, 7>(y, x, w, n, k, stream);
      case 8: return launch_gemv<T, 8>(y, x, w, n, k, stream);
      default: return fail("The GEMV kernel takes 1 to 8 rows, not %d.", m);
    }
  });
}

}  // namespace turbomind
