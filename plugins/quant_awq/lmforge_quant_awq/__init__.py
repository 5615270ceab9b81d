"""lmforge plugin package: AWQ W4A16 quantization (``lmforge lite auto_awq``)."""
