#!/usr/bin/env bash
# The domain-incremental part of the continual-learning table, in the sandbox: every method on
# shapes_domains (the 100 colour-shape classes rendered clean, then textured, then low-contrast, then in
# the hue-turned palette; 4 training and 10 test images per class and domain (1,600 training images over the stream, as `split_shapes_palette`)), scored
# domain-incrementally (every class a candidate, the domain never given), each method's own recipe and
# its shipped defaults on the mini-CLIP (the papers' blocks scaled to its 4-block towers), seeds 1-3.
# Departure, for time on 2 CPU cores: train.augmentation=none (each training image as it is, so the
# frozen-image methods train on cached features), as the class-incremental table does.
#   bash bench/domain_table.sh [SEEDS]        # SEEDS default 1,2,3; e.g. 1 for a first look
#   EXTRA="device=cuda hydra/launcher=joblib hydra.launcher.n_jobs=8" bash bench/domain_table.sh
#   METHODS="coop lamm" bash bench/domain_table.sh 1     # some groups only
# One Hydra multirun per method group; the table lands in multirun/domain_table/report.md.
set -euo pipefail
OUT=${OUT:-multirun/domain_table}
SEEDS=${1:-1,2,3}
COMMON="model=miniclip progress=false train.augmentation=none seed=$SEEDS scenario=shapes_domains ${EXTRA:-}"
GROUPS_DEFAULT="frozen_image vpt_deep maple l2p dualprompt coda_prompt sprompts attriclip cocoop"
timed() { local start=$SECONDS; "$@"; echo "  ($((SECONDS - start)) s)"; }
for group in ${METHODS:-$GROUPS_DEFAULT}; do
  case $group in
    frozen_image) methods=zeroshot,coop,lamm,coop_lamm,cls_tuning,linear_probe ;;
    *) methods=$group ;;
  esac
  timed python -m clprompt.run -m $COMMON method=$methods hydra.sweep.dir=$OUT/$group
done
python -m clprompt.report $OUT --columns metric
