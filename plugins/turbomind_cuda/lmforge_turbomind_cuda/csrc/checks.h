#pragma once
#include "common.cuh"

namespace turbomind {
int check_dtype(int dtype);
int check_heads(int heads, int kv_heads, int head_dim);
int check_width(const char* name, int width);
int check_ptr(const char* name, const void* p);
int check_model(const TmModelDesc* desc);
int check_step(const TmModelDesc* desc, const TmStep* step);
}  // namespace turbomind
