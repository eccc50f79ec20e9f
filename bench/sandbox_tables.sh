#!/usr/bin/env bash
# The sandbox versions of the papers' tables (few-shot, noisy labels, UPL), measured on the mini-CLIP.
# Each block is one Hydra multirun and one report; the tables land in multirun/sandbox_tables/<name>/report.md.
#   bash bench/sandbox_tables.sh [fewshot|noise|upl|all]
# Departures from the papers' recipes, for time on 2 CPU cores: CoOp-style methods train 20 epochs at every
# shot count (papers: 50-200), MaPLe and VPT-deep keep their 5 epochs; MaPLe's depth is the mini-CLIP's 3
# text blocks; the UPL table uses one seed.
set -euo pipefail
OUT=${OUT:-multirun/sandbox_tables}
WHAT=${1:-all}
COMMON="model=miniclip progress=false"
timed() { local start=$SECONDS; "$@"; echo "  ($((SECONDS - start)) s)"; }

if [[ $WHAT == fewshot || $WHAT == all ]]; then
  for scenario in shapes_palette shapes_novel; do
    timed python -m clprompt.run -m $COMMON scenario=$scenario protocol=few_shot \
      method=zeroshot protocol.shots=1,2,4,8,16 protocol.shots_seed=1,2,3 \
      hydra.sweep.dir=$OUT/fewshot/$scenario/zeroshot
    timed python -m clprompt.run -m $COMMON scenario=$scenario protocol=few_shot train.epochs=20 \
      method=coop,lamm,coop_lamm protocol.shots=1,2,4,8,16 protocol.shots_seed=1,2,3 \
      hydra.sweep.dir=$OUT/fewshot/$scenario/coop_family
    timed python -m clprompt.run -m $COMMON scenario=$scenario protocol=few_shot \
      method=maple method.depth=3 protocol.shots=1,2,4,8,16 protocol.shots_seed=1,2,3 \
      hydra.sweep.dir=$OUT/fewshot/$scenario/maple
    timed python -m clprompt.run -m $COMMON scenario=$scenario protocol=few_shot \
      method=vpt_deep protocol.shots=1,2,4,8,16 protocol.shots_seed=1,2,3 \
      hydra.sweep.dir=$OUT/fewshot/$scenario/vpt_deep
  done
  python -m clprompt.report $OUT/fewshot
fi

if [[ $WHAT == noise || $WHAT == all ]]; then
  timed python -m clprompt.run -m $COMMON scenario=shapes_palette protocol=noisy train.epochs=20 \
    method=coop,linear_probe loss=ce,gce protocol.noise.kind=symmetric,confusing \
    protocol.noise.rate=0.125,0.25,0.5 protocol.grad_norm_ratio=true protocol.shots_seed=1,2,3 \
    hydra.sweep.dir=$OUT/noise/noisy
  timed python -m clprompt.run -m $COMMON scenario=shapes_palette protocol=few_shot train.epochs=20 \
    method=coop,linear_probe loss=ce,gce protocol.shots_seed=1,2,3 hydra.sweep.dir=$OUT/noise/clean
  python -m clprompt.report $OUT/noise
fi

if [[ $WHAT == upl || $WHAT == all ]]; then
  for scenario in shapes_palette shapes_novel; do
    timed python -m clprompt.run -m $COMMON scenario=$scenario method=zeroshot \
      hydra.sweep.dir=$OUT/upl/$scenario/zeroshot
    timed python -m clprompt.run -m $COMMON scenario=$scenario method=coop train.epochs=20 \
      protocol=upl,robust_upl hydra.sweep.dir=$OUT/upl/$scenario/upl
  done
  python -m clprompt.report $OUT/upl --columns dataset
fi
