"""Numbers the Sage/Sparge references and kernels share, each named once (pure Python: no torch, no Triton).

Inside @triton.jit code a global must be a `tl.constexpr`: the Triton modules wrap these there.
"""
from __future__ import annotations

import math

LOG2E = 1.4426950408889634  # 1 / ln 2: the softmax runs in exp2, so the scale carries log2(e)
LN2 = 0.6931471805599453  # ln 2: a log2-domain LSE back to natural log
FP8_E4M3_MAX = 448.0  # largest finite FP8 e4m3: P and V are scaled into [-448, 448]
LOG2_FP8_E4M3_MAX = 8.807354922057604  # log2(448): subtracting it from the exponent puts P in [0, 448]
INT8_MAX = 127.0  # symmetric INT8 Q/K quantization: values in [-127, 127]
# V is scaled per channel into this range for the FP16 P.V path: keeps bf16 V with huge
# magnitudes from overflowing fp16 (the "black image" failure of other Sage kernels).
FP16_V_RANGE = 16384.0
# int32 -> fp32 without the quarter-rate I2F: for |s| < 2^22, adding the bit pattern of 1.5 * 2^23
# and reinterpreting the bits as fp32 gives 1.5 * 2^23 + s exactly; subtracting the float gives s.
I2F_MAGIC_BITS = 0x4B400000
I2F_MAGIC = 12582912.0  # 1.5 * 2^23, the float whose bit pattern is I2F_MAGIC_BITS

PV_PRECISIONS = ("fp8", "fp16")  # precision of P and V in the P.V product
SUPPORTED_HEAD_DIMS = (64, 96, 128)  # head dims the Triton and Gluon kernels are built for
KV_BLOCK = 128  # K tokens per INT8 scale, per sparsity block and per K/V tile of the kernels
GLUON_BLOCK_Q = 64  # query rows per INT8 scale in the Gluon kernel (one warpgroup's rows)
GLUON_SPARSE_BLOCK_Q = 2 * GLUON_BLOCK_Q  # Sparge's query block on the Gluon kernel: one CTA's rows (two consumers)

assert math.log2(FP8_E4M3_MAX) == LOG2_FP8_E4M3_MAX and 1 / math.log(2) == LOG2E and math.log(2) == LN2
assert I2F_MAGIC == 1.5 * 2 ** 23
