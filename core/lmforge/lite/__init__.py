"""Shared machinery of the ``lmforge lite`` quantizers: calibration text, a plain-PyTorch decoder
that runs a model one layer at a time on the chosen device while the model stays on the host,
per-channel activation statistics, scale search and folding, and writing the quantized folder.

Nothing here imports a GPU library beyond torch; the quantizer plugins (``lmforge-quant-awq``,
``lmforge-quant-smoothquant``) bring the number formats.
"""
