"""Size and write time of bertcls' two checkpoint kinds for BERT-base and BERT-large shapes.

``last.ckpt`` is the full training state (weights, AdamW's two fp32 moments per weight, the schedule); the best
checkpoint is written with ``save_weights_only`` (weights, no optimizer state). Both go through bertcls'
``AtomicCheckpointIO`` (a temporary file beside the target, flushed to disk, renamed into place), as in a run.
Weights are random (a ``BertConfig``, nothing downloaded); the optimizer state is AdamW's after one step.
One shape is held in memory at a time (BERT-large's full state is about 4 GB).

    python bench/checkpoint_cost.py                        # BERT-base and BERT-large into the temp folder
    python bench/checkpoint_cost.py --dir /scratch/me      # the filesystem the checkpoints will really go to
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertModel

from bertcls.checkpoint_io import AtomicCheckpointIO

SHAPES = {
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "bert-large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
}


def training_state(shape: dict[str, int]) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A random BERT with a 2-label head and an AdamW that has taken one step (so its moments exist)."""
    model = torch.nn.ModuleDict(
        {"encoder": BertModel(BertConfig(**shape)), "head": torch.nn.Linear(shape["hidden_size"], 2)}
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def checkpoints(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    """The two checkpoint kinds, with the entries Lightning gives them (the small ones left out)."""
    weights = {"epoch": 0, "global_step": 1, "state_dict": model.state_dict()}
    full = weights | {"optimizer_states": [optimizer.state_dict()], "lr_schedulers": [{"last_epoch": 1}]}
    return {"full (last.ckpt)": full, "weights only (best)": weights}


def timed_save(checkpoint: dict, path: Path, repeats: int) -> float:
    """The fastest of ``repeats`` writes, in seconds (the first also warms the page cache's free pages)."""
    io = AtomicCheckpointIO()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        io.save_checkpoint(checkpoint, path)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="bert-base,bert-large", help="comma-separated: " + ", ".join(SHAPES))
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: the temp folder)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print("| shape | parameters | checkpoint | size (GB) | save (s) | GB/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for name in args.shapes.split(","):
            model, optimizer = training_state(SHAPES[name])
            count = sum(parameter.numel() for parameter in model.parameters())
            for kind, checkpoint in checkpoints(model, optimizer).items():
                path = Path(folder) / f"{name}.ckpt"
                seconds = timed_save(checkpoint, path, args.repeats)
                size = path.stat().st_size / 1e9
                print(f"| {name} | {count / 1e6:.0f} M | {kind} | {size:.2f} | {seconds:.1f} | {size / seconds:.2f} |")
                path.unlink()
            del model, optimizer, checkpoint
            gc.collect()


if __name__ == "__main__":
    main()
