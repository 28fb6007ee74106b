"""quant: NF4 4-bit quantisation with double quantisation (QLoRA), in plain PyTorch.

    import quant
    quant.NF4_CODE                                                # the 16 NF4 levels, ascending
    q = quant.quantize_nf4(w, blocksize=64, double_quant=True)    # an NF4Weight
    q.packed                                                      # uint8, two 4-bit indices per byte
    w_hat = q.dequantize(dtype=torch.float32)
    layer = quant.Linear4bit.from_linear(linear, blocksize=64, double_quant=True, compute_dtype=torch.bfloat16)
    quant.model_bytes(model)                                      # bytes the model holds, 4-bit storage at its size

Files: nf4.py (the code, quantise, dequantise), linear4bit.py (the frozen 4-bit layer), memory.py.
"""

from quant.linear4bit import Linear4bit
from quant.memory import model_bytes
from quant.nf4 import DYNAMIC_CODE, NF4_CODE, NF4Weight, QuantError, dequantize_nf4, quantize_nf4

__all__ = [
    "DYNAMIC_CODE",
    "NF4_CODE",
    "Linear4bit",
    "NF4Weight",
    "QuantError",
    "dequantize_nf4",
    "model_bytes",
    "quantize_nf4",
]
