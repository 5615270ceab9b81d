"""Instructions per loop iteration of the decode attention kernel, compiled for a GPU on any
machine (no GPU needed): bf16, int8 and int4 caches at Llama-3-8B's shapes.

Compiles ``_decode_split_kernel`` for ``--arch`` (default sm_90) with the specializations its
launcher gets (16-byte-divisible pointers and strides, less what the kernel's
``do_not_specialize`` lists exclude), disassembles it with the ``cuobjdump``
that ships with Triton, finds its loop over K/V tiles (the one backward branch) and
prints the instructions per thread in that loop per 64 tokens, with the most frequent opcodes
of one iteration. A memory-bound
loop moves its tile's bytes in fewer issue slots than the memory takes; on an H200 that is about
8 thread-instructions per byte of K/V.

    python scripts/kernel_instructions.py [--split] [--arch 90] [--block-n 64]
        [--num-warps 4] [--num-stages 3] [--variant words]
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import tempfile
from pathlib import Path

import triton
from lmforge_torch_triton.ops import decode_launch
from lmforge_torch_triton.ops import triton_decode_attention as decode
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

HEADS, KV_HEADS, HEAD_DIM, BLOCK = 32, 8, 128, 64


def compile_decode(policy: int, split: bool, arch: int, block_n: int = 64, num_warps: int = 0,
                   num_stages: int = 3, variant: int = 0):
    """The kernel as the launcher would build it for bf16 queries over a ``policy`` cache,
    its codes read as ``decode_launch.CODE_VARIANTS[variant]``."""
    # Int4 codes are bytes in every variant but the first (decode_launch.CODE_VARIANTS).
    cache = ("i32", "u8", "u16" if policy == 8 else "u8", "fp16" if policy == 8 else "u8")[variant]
    cache = cache if policy else "bf16"
    # Elements, code words or code bytes per head row.
    row = HEAD_DIM // {0: 1, 8: (4, 1, 2, 2)[variant], 4: (8, 2, 2, 2)[variant]}[policy]
    splits = 16 if split else 1
    types = dict(q_ptr="*bf16", k_cache_ptr=f"*{cache}", v_cache_ptr=f"*{cache}",
                 k_sz_ptr="*i64", v_sz_ptr="*i64", block_tables_ptr="*i32", kv_lens_ptr="*i32",
                 out_ptr="*fp32" if split else "*bf16", lse_ptr="*fp32", qk_scale="fp32")
    values = dict(window=0, num_splits=splits, stride_qb=HEADS * HEAD_DIM, stride_qh=HEAD_DIM,
                  stride_kb=BLOCK * KV_HEADS * row, stride_kr=KV_HEADS * row, stride_kh=row,
                  stride_vb=BLOCK * KV_HEADS * row, stride_vr=KV_HEADS * row, stride_vh=row,
                  stride_szb=BLOCK * KV_HEADS, stride_szr=KV_HEADS, stride_szh=1,
                  stride_bt=128, stride_ob=HEADS * splits * HEAD_DIM,
                  stride_oh=splits * HEAD_DIM, stride_os=HEAD_DIM, stride_lb=HEADS * splits,
                  stride_lh=splits)
    consts = dict(GROUP=HEADS // KV_HEADS, BLOCK_H=16, HEAD_DIM=HEAD_DIM, BLOCK_D=HEAD_DIM,
                  BLOCK_SIZE=BLOCK, BLOCK_N=block_n, HAS_WINDOW=False, SPLIT=split,
                  DOT_PRECISION="tf32", QUANT=policy,
                  VARIANT=variant if policy else 0, SAME_KV_STRIDES=policy != 0,
                  SOFTCAP=False)
    fn = decode._decode_split_kernel
    signature, constexprs, attrs = {}, {}, {}
    for i, (name, param) in enumerate(zip(fn.arg_names, fn.params, strict=True)):
        if name in consts:
            signature[name], constexprs[name] = "constexpr", consts[name]
        elif param.do_not_specialize:  # as the launcher passes it: a plain i32, every step
            signature[name] = types.get(name, "i32")
        elif values.get(name) == 1:  # the launcher folds ints equal to 1
            signature[name], constexprs[name] = "constexpr", 1
        else:
            signature[name] = types.get(name, "i32")
            aligned = signature[name].startswith("*") and not param.do_not_specialize_on_alignment
            if aligned or values.get(name, 1) % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    options = dict(num_warps=num_warps or (4 if split else 2), num_stages=num_stages)
    return triton.compile(ASTSource(fn, signature, constexprs, attrs),
                          target=GPUTarget("cuda", arch, 32), options=options)


def cuobjdump(cubin: bytes, flag: str) -> str:
    """What the ``cuobjdump`` that ships with Triton prints for ``cubin`` with ``flag`` (e.g.
    ``-sass``, ``-res-usage``)."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([str(tool), flag, f.name], capture_output=True, text=True,
                              check=True).stdout


def loop_instructions(cubin: bytes) -> list[str]:
    """The opcodes of the kernel's loop: between a backward branch and its target."""
    sass = cuobjdump(cubin, "-sass")
    code = [(int(m[1], 16), m[2]) for m in
            re.finditer(r"/\*([0-9a-f]{4,6})\*/\s+(.*?);", sass)]
    start, end = next((int(m[1], 16), addr) for addr, text in code
                      if (m := re.search(r"BRA\s.*?0x([0-9a-f]+)", text))
                      and int(m[1], 16) < addr)
    return [re.sub(r"^@!?U?P\w+\s+", "", text).split()[0].split(".")[0]
            for addr, text in code if start <= addr <= end]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", action="store_true", help="the split-K kernel (4 warps)")
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90")
    parser.add_argument("--block-n", type=int, default=0,
                        help="tokens per K/V tile (default: the op's, 64; 128 quantized with --split)")
    parser.add_argument("--num-warps", type=int, default=0,
                        help="warps per program (default: the op's, 2 unsplit, 4 split)")
    parser.add_argument("--num-stages", type=int, default=3, help="software pipeline stages")
    parser.add_argument("--variant", choices=decode_launch.CODE_VARIANTS,
                        default=decode_launch.CODE_VARIANTS[0],
                        help="how the quantized kernels read their codes")
    args = parser.parse_args()
    threads = 32 * (args.num_warps or (4 if args.split else 2))
    for policy in (0, 8, 4):
        block_n = args.block_n or decode_launch.kernel_config(policy, 2 if args.split else 1).block_n
        kernel = compile_decode(policy, args.split, args.arch, block_n, args.num_warps,
                                args.num_stages, decode_launch.CODE_VARIANTS.index(args.variant))
        ops = loop_instructions(kernel.asm["cubin"])
        per_64 = len(ops) * 64 / block_n
        # K and V bytes per token: bf16 values, int8 codes or packed int4 codes.
        tile_bytes = 64 * 2 * HEAD_DIM * {0: 2, 8: 1, 4: 0.5}[policy]
        counts = collections.Counter(ops)
        top = ", ".join(f"{op} {n}" for op, n in counts.most_common(8))
        # Shared-memory traffic and barriers: what a layout conversion through shared memory
        # adds to each tile.
        shared = ", ".join(f"{op} {counts[op]}" for op in ("LDGSTS", "LDS", "STS", "LDSM", "BAR"))
        print(f"quant_policy {policy} ({block_n}-token tiles): {per_64:.0f} instructions per "
              f"thread per 64 tokens, {per_64 * threads / tile_bytes:.1f} per byte of K/V; {top}; "
              f"shared memory: {shared}")


if __name__ == "__main__":
    main()
