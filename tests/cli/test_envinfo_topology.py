"""check_env's GPU topology line, read from ``nvidia-smi topo -m``."""

from __future__ import annotations

from lmforge.cli.envinfo import gpu_topology

TWO_NVLINK = """\
\t\x1b[4mGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m
GPU0\t X \tNV18\t0-31\t0\t\tN/A
GPU1\tNV18\t X \t0-31\t0\t\tN/A

Legend:

  X    = Self
  NV#  = Connection traversing a bonded set of # NVLinks
"""

FOUR_MIXED = """\
\tGPU0\tGPU1\tGPU2\tGPU3\tNIC0\tCPU Affinity\tNUMA Affinity
GPU0\t X \tNV4\tPHB\tSYS\tPIX\t0-15\t0
GPU1\tNV4\t X \tSYS\tPHB\tPHB\t0-15\t0
GPU2\tPHB\tSYS\t X \tNV4\tSYS\t16-31\t1
GPU3\tSYS\tPHB\tNV4\t X \tSYS\t16-31\t1
NIC0\tPIX\tPHB\tSYS\tSYS\t X
"""


def test_two_gpus_over_nvlink():
    assert gpu_topology(TWO_NVLINK) == "GPU0-GPU1: NVLink (18 links)"


def test_pairs_over_nvlink_and_pcie():
    topology = gpu_topology(FOUR_MIXED)
    assert topology.split("; ") == [
        "GPU0-GPU1: NVLink (4 links)",
        "GPU0-GPU2: PCIe through the CPU's host bridge (PHB)",
        "GPU0-GPU3: PCIe across CPU sockets (SYS)",
        "GPU1-GPU2: PCIe across CPU sockets (SYS)",
        "GPU1-GPU3: PCIe through the CPU's host bridge (PHB)",
        "GPU2-GPU3: NVLink (4 links)",
    ]


def test_all_pairs_alike_and_no_matrix():
    eight = ["\t" + "\t".join(f"GPU{i}" for i in range(8)) + "\tCPU Affinity"]
    for i in range(8):
        eight.append(f"GPU{i}\t" + "\t".join(" X " if i == j else "NV18" for j in range(8)))
    assert gpu_topology("\n".join(eight)) == "every pair of the 8 GPUs: NVLink (18 links)"
    assert gpu_topology("\tGPU0\tCPU Affinity\nGPU0\t X \t0-31\n") == ""
    assert gpu_topology("") == ""
