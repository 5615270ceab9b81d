"""Builds the CUDA library with nvcc as part of building the distribution (see
lmforge_turbomind_cuda/build.py); without nvcc the package installs without it and the engine
says what is missing when chosen."""

import importlib.util
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _build_module():
    spec = importlib.util.spec_from_file_location(
        "_turbomind_build", HERE / "lmforge_turbomind_cuda" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        build = _build_module()
        editable = getattr(self, "editable_mode", False)
        lib_dir = build.LIB_DIR if editable else (
            Path(self.build_lib) / "lmforge_turbomind_cuda" / "lib")
        try:
            build.build_library(lib_dir)
        except build.BuildError as exc:
            sys.stderr.write(f"lmforge-turbomind-cuda: CUDA library not built: {exc}\n")


setup(cmdclass={"build_py": BuildWithLibrary})
