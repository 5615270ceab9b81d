// Shared device helpers: 16-bit types, 16-byte vectors, reductions, error reporting.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <cstdarg>
#include <cstdio>

#include "turbomind.h"

namespace turbomind {

// Records the one-sentence message tm_last_error() returns; always returns 1.
int fail(const char* fmt, ...);

template <typename T> struct Math;
template <> struct Math<__half> {
  static __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};
template <> struct Math<__nv_bfloat16> {
  static __device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float v) {
    return __float2bfloat16_rn(v);
  }
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

// Rounds to T and back: the value a 16-bit tensor would hold.
template <typename T> __device__ __forceinline__ float round_to(float v) {
  return Math<T>::to_float(Math<T>::from_float(v));
}

// Eight 16-bit values moved as one 16-byte access.
template <typename T> struct Vec8 {
  uint4 raw;
  __device__ __forceinline__ void load(const T* p) { raw = *reinterpret_cast<const uint4*>(p); }
  __device__ __forceinline__ void store(T* p) const { *reinterpret_cast<uint4*>(p) = raw; }
  __device__ __forceinline__ void to_float(float (&f)[8]) const {
    const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) f[i] = Math<T>::to_float(v[i]);
  }
  __device__ __forceinline__ void from_float(const float (&f)[8]) {
    T* v = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = Math<T>::from_float(f[i]);
  }
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block; every thread gets the result. `scratch` holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = lane < warps ? scratch[lane] : 0.f;
  return warp_sum(v);
}

inline cudaStream_t as_stream(void* s) { return reinterpret_cast<cudaStream_t>(s); }

// Programmatic dependent launch (Hopper and later): every kernel is launched so that it may start
// while the kernel before it finishes, and begins by waiting for that kernel's results
// (griddepcontrol.wait), then lets the next one launch. A step of hundreds of short kernels then
// pays no launch gap between them. Each kernel must call this before touching global memory.
__device__ __forceinline__ void pdl_begin() {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Whether the current device takes programmatic dependent launches (compute capability 9.0 or
// later; LMFORGE_TURBOMIND_PDL=0 turns them off).
bool pdl_enabled();

// Launches `kernel` with programmatic dependent launch where the device has it; `smem` bytes of
// dynamic shared memory (above 48 KB the caller raises the kernel's limit first).
template <typename... Params, typename... Args>
int launch_smem(const char* what, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                cudaStream_t stream, Args... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attr;
  config.numAttrs = 1;
  const cudaError_t err = cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...);
  if (err == cudaSuccess) return 0;
  cudaGetLastError();
  return fail("The %s kernel did not launch: %s.", what, cudaGetErrorString(err));
}

template <typename... Params, typename... Args>
int launch(const char* what, void (*kernel)(Params...), dim3 grid, dim3 block,
           cudaStream_t stream, Args... args) {
  return launch_smem(what, kernel, grid, block, 0, stream, args...);
}

// Runs `body` with T = __half or __nv_bfloat16 for a TM_* dtype code.
#define TM_DISPATCH_DTYPE(dtype, ...)                                       \
  [&]() -> int {                                                            \
    if ((dtype) == TM_FLOAT16) {                                            \
      using T = __half;                                                     \
      return __VA_ARGS__();                                                 \
    }                                                                       \
    if ((dtype) == TM_BFLOAT16) {                                           \
      using T = __nv_bfloat16;                                              \
      return __VA_ARGS__();                                                 \
    }                                                                       \
    return ::turbomind::fail("dtype code %d is not float16 (0) or bfloat16 (1).", (int)(dtype)); \
  }()

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace turbomind
