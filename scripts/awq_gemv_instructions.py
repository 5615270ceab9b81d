"""Issued instructions per 4-bit weight in the W4A16 GEMV's loop, compiled for a GPU on any
machine (no GPU needed), at Llama-3-8B's shapes and group 128.

Compiles ``triton_awq_gemv._awq_gemv_kernel`` for ``--arch`` (default sm_90) with the
specializations its launcher gets, finds its loop over K blocks with
:func:`kernel_instructions.loop_instructions` and prints the instructions per thread of one
iteration, per weight, with the most frequent opcodes. At one row an H200 streams 4-bit weights
at ~4 TB/s with about 4.5 warp-instruction issue slots per weight-lane to spare; a loop well
under that is bound by memory, not by its unpacking.

    python scripts/awq_gemv_instructions.py [--block-n 256] [--num-warps 4] [--prefetch]
        [--rows 1 2 4 8] [--split]
"""

from __future__ import annotations

import argparse
import collections

import triton
from kernel_instructions import loop_instructions
from lmforge_torch_triton.ops import triton_awq_gemv as gemv
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

K, GROUP = 4096, 128


# The launchers' pointer types for bf16 rows, and the integer arguments they pass as multiples
# of 16.
TYPES = dict(x_ptr="*bf16", qw_ptr="*i32", qz_ptr="*i32", s_ptr="*bf16", bias_ptr="*bf16",
             y_ptr="*bf16", ws_ptr="*fp32", lock_ptr="*i32")
ALIGNED = ("N", "K", "stride_xm", "stride_qn", "stride_zg", "stride_sg", "stride_ym")


def compile_awq(fn, consts: dict, arch: int, num_warps: int, num_stages: int):
    """The AWQ kernel ``fn`` with the constexprs ``consts``, specialized as its launcher's
    arguments make it (pointers, N, K and the row strides are multiples of 16; what the kernel
    does not specialize on, such as the split values, gets no hint), compiled for ``arch``."""
    signature, constexprs, attrs = {}, {}, {}
    for i, (name, param) in enumerate(zip(fn.arg_names, fn.params, strict=True)):
        if name in consts:
            signature[name], constexprs[name] = "constexpr", consts[name]
            continue
        signature[name] = TYPES.get(name, "i32")
        if not param.do_not_specialize and (signature[name].startswith("*")
                                            or name in ALIGNED):
            attrs[(i,)] = [["tt.divisibility", 16]]
    return triton.compile(ASTSource(fn, signature, constexprs, attrs),
                          target=GPUTarget("cuda", arch, 32),
                          options=dict(num_warps=num_warps, num_stages=num_stages))


def compile_gemv(rows: int, split: bool, arch: int, block_n: int, num_warps: int,
                 prefetch: bool):
    """The kernel as :func:`triton_awq_gemv.launch` builds it for bf16 rows."""
    consts = dict(ROWS=rows, GROUP=GROUP, HAS_BIAS=False, SPLIT=split, EVEN_N=True,
                  PREFETCH=prefetch,
                  BLOCK_M=triton.next_power_of_2(rows), BLOCK_N=block_n,
                  BLOCK_K=gemv.block_k(GROUP, K))
    return compile_awq(gemv._awq_gemv_kernel, consts, arch, num_warps, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90")
    parser.add_argument("--block-n", type=int, default=256, help="output columns per program")
    parser.add_argument("--num-warps", type=int, default=4)
    parser.add_argument("--prefetch", action="store_true",
                        help="load the next K block before this one's arithmetic")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--split", action="store_true", help="the split-K specialization")
    args = parser.parse_args()
    threads = 32 * args.num_warps
    weights = args.block_n * gemv.block_k(GROUP, K)  # per loop iteration of a program
    for rows in args.rows:
        kernel = compile_gemv(rows, args.split, args.arch, args.block_n, args.num_warps,
                              args.prefetch)
        ops = loop_instructions(kernel.asm["cubin"])
        top = ", ".join(f"{op} {n}" for op, n in collections.Counter(ops).most_common(8))
        print(f"{rows} row(s): {len(ops)} instructions per thread per iteration, "
              f"{len(ops) * threads / weights:.2f} per weight; {top}")


if __name__ == "__main__":
    main()
