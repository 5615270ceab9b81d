// Large matmuls through cuBLASLt, opened at run time from the CUDA libraries the caller already
// has (torch's nvidia-cublas wheel, or a toolkit): the build needs no cuBLAS headers or
// libraries, and one build runs with CUDA 12 or 13 stacks. The few declarations below are
// cuBLASLt's stable C API.
#include <dlfcn.h>

#include <map>
#include <mutex>
#include <tuple>

#include "common.cuh"

namespace turbomind {
namespace {

using Handle = void*;
using Desc = void*;
struct Algo { uint64_t data[8]; };
struct Heuristic {
  Algo algo;
  size_t workspace_size;
  int state;
  float waves;
  int reserved[4];
};

constexpr int kCompute32F = 68;     // CUBLAS_COMPUTE_32F
constexpr int kR32F = 0, kR16F = 2, kR16BF = 14;  // cudaDataType
constexpr int kDescTransA = 3, kDescTransB = 4;   // CUBLASLT_MATMUL_DESC_TRANS{A,B}
constexpr int kOpN = 0, kOpT = 1;
constexpr int kPrefMaxWorkspace = 1;  // CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES

struct Api {
  int (*create)(Handle*);
  int (*desc_create)(Desc*, int, int);
  int (*desc_set)(Desc, int, const void*, size_t);
  int (*layout_create)(Desc*, int, uint64_t, uint64_t, int64_t);
  int (*pref_create)(Desc*);
  int (*pref_set)(Desc, int, const void*, size_t);
  int (*heuristic)(Handle, Desc, Desc, Desc, Desc, Desc, Desc, int, Heuristic*, int*);
  int (*matmul)(Handle, Desc, const void*, const void*, Desc, const void*, Desc, const void*,
                const void*, Desc, void*, Desc, const Algo*, void*, size_t, cudaStream_t);
};

Api api;
Handle handle = nullptr;
bool loaded = false;
std::mutex plan_mutex;

// Descriptors and the chosen algorithm of one problem shape, made once.
struct Plan {
  Desc op, a, b, c;
  Algo algo;
  size_t workspace;
};
std::map<std::tuple<int, int, int, int, size_t>, Plan> plans;

template <typename F> bool sym(void* lib, const char* name, F& fn) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  return fn != nullptr;
}

}  // namespace

int load_cublaslt(const char* path) {
  if (loaded) return 0;
  void* lib = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
  if (!lib) return fail("Cannot open cuBLASLt at %s: %s.", path, dlerror());
  if (!(sym(lib, "cublasLtCreate", api.create) &&
        sym(lib, "cublasLtMatmulDescCreate", api.desc_create) &&
        sym(lib, "cublasLtMatmulDescSetAttribute", api.desc_set) &&
        sym(lib, "cublasLtMatrixLayoutCreate", api.layout_create) &&
        sym(lib, "cublasLtMatmulPreferenceCreate", api.pref_create) &&
        sym(lib, "cublasLtMatmulPreferenceSetAttribute", api.pref_set) &&
        sym(lib, "cublasLtMatmulAlgoGetHeuristic", api.heuristic) &&
        sym(lib, "cublasLtMatmul", api.matmul)))
    return fail("%s lacks a cuBLASLt function this library needs; is it cuBLASLt 12 or newer?",
                path);
  if (int st = api.create(&handle)) return fail("cublasLtCreate failed with status %d.", st);
  loaded = true;
  return 0;
}

// y[M, N] (row-major) = x[M, K] @ w[N, K]^T, i.e. column-major y^T = w^T' x^T: A = w read
// transposed (K x N, ld K), B = x (K x M, ld K), C = y^T (N x M, ld N).
int cublaslt_matmul(int dtype, void* y, const void* x, const void* w, int m, int n, int k,
                    void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (!loaded) return fail("cuBLASLt is not loaded; call tm_load_cublaslt first.");
  const int type = dtype == TM_BFLOAT16 ? kR16BF : kR16F;
  Plan plan;
  {
    std::lock_guard<std::mutex> lock(plan_mutex);
    auto key = std::make_tuple(dtype, m, n, k, workspace_bytes);
    auto found = plans.find(key);
    if (found != plans.end()) {
      plan = found->second;
    } else {
      const int ta = kOpT, tb = kOpN;
      Desc pref;
      if (api.desc_create(&plan.op, kCompute32F, kR32F) ||
          api.desc_set(plan.op, kDescTransA, &ta, sizeof(ta)) ||
          api.desc_set(plan.op, kDescTransB, &tb, sizeof(tb)) ||
          api.layout_create(&plan.a, type, k, n, k) ||
          api.layout_create(&plan.b, type, k, m, k) ||
          api.layout_create(&plan.c, type, n, m, n) || api.pref_create(&pref) ||
          api.pref_set(pref, kPrefMaxWorkspace, &workspace_bytes, sizeof(workspace_bytes)))
        return fail("cuBLASLt could not describe a %dx%dx%d matmul.", m, n, k);
      Heuristic result;
      int count = 0;
      if (api.heuristic(handle, plan.op, plan.a, plan.b, plan.c, plan.c, pref, 1, &result,
                        &count) || count == 0)
        return fail("cuBLASLt has no algorithm for a %dx%dx%d matmul.", m, n, k);
      plan.algo = result.algo;
      plan.workspace = result.workspace_size;
      plans[key] = plan;
    }
  }
  const float alpha = 1.f, beta = 0.f;
  if (int st = api.matmul(handle, plan.op, &alpha, w, plan.a, x, plan.b, &beta, y, plan.c, y,
                          plan.c, &plan.algo, workspace, workspace_bytes, stream))
    return fail("cublasLtMatmul failed with status %d on a %dx%dx%d matmul.", st, m, n, k);
  return 0;
}

}  // namespace turbomind
