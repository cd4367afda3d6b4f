"""Training throughput of bertcls against a plain Hugging Face ``transformers.Trainer`` on the quickstart.

The single-label run of ``heads.py`` (``python bench/heads.py --heads single_label``): all-MiniLM-L6-v2 on the
quickstart's Rotten Tomatoes sentences, with the quickstart's settings and the same seeded 90/10
train/validation split on both sides. Every option of ``heads.py`` works here too.

    python bench/train_throughput.py                          # 1 epoch each: 10-15 minutes on 2 CPU cores
    python bench/train_throughput.py --max-train-batches 20   # smoke run
    python bench/train_throughput.py --trainer-group-by-length --repeats 3 --json results.json
"""

from __future__ import annotations

import sys

from heads import main

if __name__ == "__main__":
    main(["--heads", "single_label", *sys.argv[1:]])
