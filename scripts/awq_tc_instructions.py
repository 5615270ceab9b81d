"""Issued instructions per 4-bit weight in the W4A16 tensor-core matmul's loop, and where its
weight operand lives, compiled for a GPU on any machine (no GPU needed), Llama-3-8B's K and
group 128.

Compiles ``triton_awq_tc._awq_tc_kernel`` for ``--arch`` (default sm_90) with the
specializations its launcher gets for bf16 rows, prints per row count the loop's instructions
per thread per weight (:func:`kernel_instructions.loop_instructions`) with the most frequent
opcodes and its shared-memory ones, and from the TTGIR whether the dot takes the dequantized
tile from registers (``ttng.warp_group_dot`` with a ``#ttg.dot_op`` A, no ``ttg.local_alloc``
of a 16-bit ``[block_n, block_k]`` tile) and whether the rows' tile is copied asynchronously.

    python scripts/awq_tc_instructions.py [--block-n 128] [--block-k 128] [--num-warps 4]
        [--num-stages 4] [--rows 16 64] [--split] [--dump DIR]
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

import triton
from awq_gemv_instructions import GROUP, K, compile_awq
from kernel_instructions import cuobjdump, loop_instructions
from lmforge_torch_triton.ops import triton_awq_gemv as gemv
from lmforge_torch_triton.ops import triton_awq_tc as tc


def compile_tc(rows: int, split: bool, arch: int, block_n: int, block_k: int, num_warps: int,
               num_stages: int):
    """The kernel as :func:`triton_awq_tc.launch` builds it for ``rows`` bf16 rows."""
    block_m = max(16, min(128, triton.next_power_of_2(rows)))
    consts = dict(GROUP=GROUP, REPACK_K=gemv.block_k(GROUP, K), HAS_BIAS=False, SPLIT=split,
                  EVEN_M=rows % block_m == 0, EVEN_N=True, BLOCK_M=block_m, BLOCK_N=block_n,
                  BLOCK_K=block_k)
    return compile_awq(tc._awq_tc_kernel, consts, arch, num_warps, num_stages)


def resources(cubin: bytes) -> str:
    """Registers, static shared memory (the pipeline's buffers are dynamic) and local
    (spilled) memory, from ``cuobjdump -res-usage``."""
    use = dict(re.findall(r"(REG|SHARED|LOCAL):(\d+)", cuobjdump(cubin, "-res-usage")))
    return f"{use.get('REG')} registers, {use.get('SHARED')} B static shared, {use.get('LOCAL')} B local"


def operand_report(ttgir: str, block_n: int, block_k: int) -> str:
    """Where the dot's operands come from, read off the TTGIR."""
    dots = re.findall(r"(ttng\.warp_group_dot|tt\.dot)\s+(%\S+),", ttgir)
    kind = dots[0][0] if dots else "no dot"
    a_regs = bool(re.search(r"warp_group_dot.*: tensor<\d+x\d+x(?:bf|f)16, #ttg\.dot_op", ttgir))
    weight_smem = re.search(rf"ttg\.local_alloc.*tensor<{block_n}x{block_k}x(?:bf|f)16", ttgir)
    async_x = "ttg.async_copy_global_to_local" in ttgir
    return (f"{kind}, A from {'registers' if a_regs else 'shared memory'}, "
            f"{'a' if weight_smem else 'no'} local_alloc of the weight tile, rows' tile "
            f"{'copied asynchronously' if async_x else 'loaded synchronously'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90")
    parser.add_argument("--block-n", type=int, default=128, help="output columns per program")
    parser.add_argument("--block-k", type=int, default=128, help="K step")
    parser.add_argument("--num-warps", type=int, default=4)
    parser.add_argument("--num-stages", type=int, default=4)
    parser.add_argument("--rows", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--split", action="store_true", help="the split-K specialization")
    parser.add_argument("--dump", help="write each variant's TTGIR, PTX and SASS here")
    args = parser.parse_args()
    threads = 32 * args.num_warps
    weights = args.block_n * args.block_k  # per loop iteration of a program
    for rows in args.rows:
        kernel = compile_tc(rows, args.split, args.arch, args.block_n, args.block_k,
                            args.num_warps, args.num_stages)
        ops = loop_instructions(kernel.asm["cubin"])
        counts = collections.Counter(ops)
        top = ", ".join(f"{op} {n}" for op, n in counts.most_common(8))
        shared = ", ".join(f"{op} {counts[op]}" for op in ("LDGSTS", "LDS", "STS", "LDSM",
                                                            "BAR", "SHFL"))
        print(f"{rows} rows: {len(ops)} instructions per thread per iteration, "
              f"{len(ops) * threads / weights:.2f} per weight; {top}; shared memory: {shared}; "
              f"{resources(kernel.asm['cubin'])}")
        print(f"    {operand_report(kernel.asm['ttgir'], args.block_n, args.block_k)}")
        if args.dump:
            out = Path(args.dump)
            out.mkdir(parents=True, exist_ok=True)
            for ext in ("ttgir", "ptx"):
                (out / f"awq_tc_{rows}.{ext}").write_text(kernel.asm[ext])
            (out / f"awq_tc_{rows}.cubin").write_bytes(kernel.asm["cubin"])


if __name__ == "__main__":
    main()
