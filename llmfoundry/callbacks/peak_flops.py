"""Dense peak tensor-core FLOP/s of the accelerators MFU is reported for.

MFU is only meaningful against the right peak, so an unknown device or precision gives None and the
caller omits MFU rather than guessing. The numbers are NVIDIA's datasheet values without the 2x
sparsity factor. Devices are matched on `torch.cuda.get_device_name()`; variants with different
clocks or power limits (H100 NVL, H200 NVL, GH200, GB200) are deliberately not matched.
"""

from __future__ import annotations

import re

# (pattern on the device name, {compute dtype: FLOP/s}); the first matching pattern wins.
_PEAKS: list[tuple[re.Pattern[str], dict[str, float]]] = [
    (re.compile(r'\bA100\b', re.I), {'bf16': 312e12}),
    (re.compile(r'\bH100\b.*\bPCIe\b', re.I), {'bf16': 756e12}),
    (re.compile(r'\bH100\b.*\b(SXM|HBM3)', re.I), {'bf16': 989e12, 'fp8': 1979e12}),
    (re.compile(r'\bH200\b(?!.*\bNVL\b)', re.I), {'bf16': 989e12}),
    (re.compile(r'\bB200\b', re.I), {'bf16': 2250e12, 'fp8': 4500e12}),
]

# The matmul dtype each training precision runs at. fp16 tensor cores peak at the bf16 rate on every
# chip above; fp32 training (TF32 or not) has no entry, so MFU is omitted for it.
_PRECISION_DTYPE = {'amp_bf16': 'bf16', 'amp_fp16': 'bf16', 'amp_fp8': 'fp8'}


def peak_flops(device_name: str, precision: str) -> float | None:
    """Peak FLOP/s of one device of this name training at `precision`, or None when not known."""
    dtype = _PRECISION_DTYPE.get(precision)
    if dtype is None:
        return None
    for pattern, peaks in _PEAKS:
        if pattern.search(device_name):
            return peaks.get(dtype)
    return None
