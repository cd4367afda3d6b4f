"""The machine's attainable matrix-product speed, the denominator of the suite's model FLOPs utilisation (MFU).

Times large square matrix products (fp32 and bf16; on a GPU also the vendor's dense bf16 peak where the GPU is
known) for about a second each (the best of three windows), after a warm-up, and prints the figures as JSON:

    python bench/matmul_peak.py
"""

from __future__ import annotations

import json
import time

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, in TFLOP/s, by device name.
GPU_BF16_SPEC_TFLOPS = {
    "H200": 989.4,
    "H100 SXM": 989.4,
    "H100 80GB HBM3": 989.4,
    "H100 PCIe": 756.5,
    "H100 NVL": 835.5,
    "A100": 312.0,
    "L40S": 362.0,
    "A10": 125.0,
}


def timed_tflops(size: int, dtype: object, device: str, seconds: float = 1.0) -> float:
    import torch

    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):  # warm-up: kernel selection, oneDNN's weight reorders
        a @ b
    best = 0.0
    for _ in range(3):  # the best of three windows: a shared machine has slow spells
        synchronize()
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 3:
            a @ b
            count += 1
        synchronize()
        best = max(best, 2 * size**3 * count / (time.perf_counter() - started) / 1e12)
    return best


def spec_tflops(name: str) -> float | None:
    for model, tflops in GPU_BF16_SPEC_TFLOPS.items():
        if model in name:
            return tflops
    return None


def measure() -> dict[str, object]:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        return {
            "device": name,
            "fp32_tflops": timed_tflops(8192, torch.float32, "cuda"),
            "bf16_tflops": timed_tflops(8192, torch.bfloat16, "cuda"),
            "bf16_spec_tflops": spec_tflops(name),
        }
    return {
        "device": f"CPU, {torch.get_num_threads()} threads",
        "fp32_tflops": timed_tflops(2048, torch.float32, "cpu"),
        "bf16_tflops": timed_tflops(2048, torch.bfloat16, "cpu"),
        "bf16_spec_tflops": None,
    }


if __name__ == "__main__":
    print(json.dumps(measure()))
