"""lmforge plugin package: W8A8 quantization with SmoothQuant (``lmforge lite smooth_quant``)."""
