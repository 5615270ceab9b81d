"""The ``turbomind`` engine of lmforge: hand-written CUDA kernels in one shared library
(``libturbomind.so``, plain C ABI), the whole forward step in one native call, and
``lmforge convert``."""
