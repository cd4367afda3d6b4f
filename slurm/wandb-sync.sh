#!/bin/bash
# Upload the W&B runs that jobs wrote offline, from a machine with internet (a login node). Not an sbatch script.
#
#   bash slurm/wandb-sync.sh                       # every offline run under checkpoints/
#   bash slurm/wandb-sync.sh checkpoints/my-exp    # or under these folders
#   bash slurm/wandb-sync.sh checkpoints -- --project my-project --entity my-team   # options for `wandb sync`
#   bash slurm/wandb-sync.sh checkpoints -- --dry-run                               # list, upload nothing
#
# Each bertcls run folder keeps its W&B run in <run folder>/wandb/offline-run-<time>-<id>/. A resumed or requeued
# run (and `test` of its checkpoint) adds folders with the same id: `wandb sync` uploads those in order, as one
# W&B run. Runs already uploaded are skipped, so running this again (e.g. from cron while jobs run) is safe.
# Needs a W&B API key: `wandb login` once, or WANDB_API_KEY.
set -euo pipefail

folders=()
while (($#)); do
  if [ "$1" = "--" ]; then
    shift
    break
  fi
  folders+=("$1")
  shift
done
((${#folders[@]})) || folders=(checkpoints)

mapfile -t runs < <(find "${folders[@]}" -type d -name 'offline-run-*' -path '*/wandb/*' -prune | sort)
if ((${#runs[@]} == 0)); then
  echo "wandb-sync.sh: no offline W&B runs under ${folders[*]} (looked for */wandb/offline-run-*)" >&2
  exit 1
fi
echo "wandb-sync.sh: ${#runs[@]} offline run folder(s) under ${folders[*]}"
WANDB_MODE=online wandb sync "$@" "${runs[@]}"
