#!/usr/bin/env bash
# The continual-learning table in the sandbox: every method (the few-shot prompt methods, then the
# continual-learning prompt methods L2P, DualPrompt, CODA-Prompt, S-Prompts, AttriCLIP) on split_shapes_palette (10 class-incremental
# experiences of the palette-shifted world) and shapes_sequence (palette, fine, novel: three tasks with
# their own label spaces), scored class-incrementally and task-incrementally, each method's own recipe
# (its config's epochs and optimiser), seeds 1-3. The prompted blocks are given for the mini-CLIP's own towers, as
# the published table ran them (MaPLe: all 3 text blocks; DualPrompt: g [0, 1], e [2, 3]; CODA-Prompt: blocks 0-3;
# AttriCLIP: prompt_length 8): the methods' defaults, the papers' blocks scaled to the tower (g [0], e [1]; [0, 1];
# depth 2; prompt_length fitted: 8), would run other models (docs/methods/index.md, "Blocks").
# Departure, for time on 2 CPU cores: train.augmentation=none (each training image as it is, so the
# frozen-image methods train on cached features; the main command does the same).
#   bash bench/continual_table.sh [SEEDS]        # SEEDS default 1,2,3; e.g. 1 for a first look
#   EXTRA="device=cuda hydra/launcher=joblib hydra.launcher.n_jobs=8" bash bench/continual_table.sh
#                                                 # overrides added to every sweep: a GPU, jobs in parallel
# One Hydra multirun per (stream, method group); the table lands in multirun/continual_table/report.md
# (python -m clprompt.report multirun/continual_table --columns metric). The frozen-image methods share
# their image features through the cache (cache.dir), so each seed's views are encoded once.
set -euo pipefail
OUT=${OUT:-multirun/continual_table}
SEEDS=${1:-1,2,3}
COMMON="model=miniclip progress=false train.augmentation=none seed=$SEEDS eval.protocol=class_incremental,task_incremental ${EXTRA:-}"
timed() { local start=$SECONDS; "$@"; echo "  ($((SECONDS - start)) s)"; }

for scenario in split_shapes_palette shapes_sequence; do
  timed python -m clprompt.run -m $COMMON scenario=$scenario \
    method=zeroshot,coop,lamm,coop_lamm,cls_tuning,linear_probe hydra.sweep.dir=$OUT/$scenario/frozen_image
  timed python -m clprompt.run -m $COMMON scenario=$scenario method=vpt_deep \
    hydra.sweep.dir=$OUT/$scenario/vpt_deep
  timed python -m clprompt.run -m $COMMON scenario=$scenario method=maple method.depth=3 \
    hydra.sweep.dir=$OUT/$scenario/maple
done
# the knob that tests the recency-bias explanation: the loss over every class seen so far
timed python -m clprompt.run -m $COMMON scenario=split_shapes_palette method=lamm,coop,coop_lamm train.classes=seen \
  hydra.sweep.dir=$OUT/split_shapes_palette/seen
for scenario in split_shapes_palette shapes_sequence; do  # last: batch 1 and a text forward per test image
  timed python -m clprompt.run -m $COMMON scenario=$scenario method=cocoop hydra.sweep.dir=$OUT/$scenario/cocoop
done
# the continual-learning prompt methods (their own recipes; the blocks of the mini-CLIP's 4-block image tower, as given)
for scenario in split_shapes_palette shapes_sequence; do
  timed python -m clprompt.run -m $COMMON scenario=$scenario method=l2p hydra.sweep.dir=$OUT/$scenario/l2p
  timed python -m clprompt.run -m $COMMON scenario=$scenario method=dualprompt 'method.g_layers=[0,1]' 'method.e_layers=[2,3]' \
    hydra.sweep.dir=$OUT/$scenario/dualprompt
  timed python -m clprompt.run -m $COMMON scenario=$scenario method=coda_prompt 'method.layers=[0,1,2,3]' \
    hydra.sweep.dir=$OUT/$scenario/coda_prompt
  timed python -m clprompt.run -m $COMMON scenario=$scenario method=sprompts hydra.sweep.dir=$OUT/$scenario/sprompts
  timed python -m clprompt.run -m $COMMON scenario=$scenario method=attriclip method.prompt_length=8 \
    hydra.sweep.dir=$OUT/$scenario/attriclip
done
python -m clprompt.report $OUT --columns metric
