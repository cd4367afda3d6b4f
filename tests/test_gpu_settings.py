"""GPU-only settings checked on the CPU: TF32 for ``32-true`` CUDA runs (``TF32Matmul``'s decision, with a fake
trainer) and the bf16 gradient compression of configs/strategy/ddp-bf16-compress.yaml (the hook itself, on two
gloo processes: PyTorch's DDP accepts it only with NCCL, and Lightning registers it only on CUDA)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import CONFIGS
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
from lightning.pytorch.cli import LightningArgumentParser
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import bf16_compress_hook
from transformers import BertConfig, BertModel

from bertcls.callbacks import TF32Matmul


@pytest.mark.parametrize(
    ("accelerator", "precision", "expected"),
    [
        (CUDAAccelerator(), "32-true", "high"),
        (CUDAAccelerator(), "bf16-mixed", "highest"),
        (CPUAccelerator(), "32-true", "highest"),
    ],
    ids=["cuda-32-true", "cuda-bf16-mixed", "cpu-32-true"],
)
def test_tf32_only_for_full_precision_on_cuda(accelerator, precision: str, expected: str) -> None:
    trainer = SimpleNamespace(accelerator=accelerator, precision=precision)
    callback = TF32Matmul()
    assert torch.get_float32_matmul_precision() == "highest"
    try:
        callback.setup(trainer, None, "fit")
        assert torch.get_float32_matmul_precision() == expected
    finally:
        callback.teardown(trainer, None, "fit")
    assert torch.get_float32_matmul_precision() == "highest", "put back for what runs next in the process"


def test_bf16_compress_config_names_the_hook() -> None:
    parser = LightningArgumentParser()
    parser.add_lightning_class_args(L.Trainer, "trainer")
    config = parser.parse_args(["--trainer.strategy", str(CONFIGS / "strategy" / "ddp-bf16-compress.yaml")])
    strategy = parser.instantiate_classes(config).trainer.strategy
    assert strategy._ddp_comm_hook is bf16_compress_hook


def average_gradients(rank: int, world_size: int, port: int, results: dict) -> None:
    """On each rank: one backward of a small random BERT on this rank's batch, then its flattened gradient
    averaged across ranks twice, by fp32 all-reduce and by the bf16 hook (as DDP hands it a bucket)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.manual_seed(0)  # the same weights on every rank
    model = BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128))
    torch.manual_seed(1 + rank)  # another batch on every rank
    tokens = torch.randint(0, model.config.vocab_size, (8, 32))
    model(tokens).last_hidden_state.pow(2).mean().backward()
    gradient = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    exact = gradient.clone()
    dist.all_reduce(exact)
    exact /= world_size
    compressed = bf16_compress_hook(None, (gradient.clone(),)).wait()
    if rank == 0:
        results["relative_error"] = float((compressed - exact).norm() / exact.norm())
        results["dtype"] = str(compressed.dtype)
    dist.destroy_process_group()


def test_bf16_compress_hook_averages_gradients_within_bf16_rounding() -> None:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(average_gradients, args=(2, 29571, results), nprocs=2)
        results = dict(results)
    assert results["dtype"] == "torch.float32", "widened back before the optimizer sees it"
    # bf16 keeps 8 significant bits: each element is off by at most 2^-9 relative; in norm about 2^-10 or so.
    assert 1e-4 < results["relative_error"] < 4e-3
