#!/usr/bin/env bash
# The confirmatory replication of docs/pretraining.md: seeds 8-22 of contrastive-only (con) and
# learnable matching (mf), trained, scored on held-out folds 2-5 (fold 1 is each run's own
# eval.jsonl), two runs at a time on one core each.
#
#   bash docs/experiments/replication.sh            # every pair not yet recorded, seed 8 first
#   bash docs/experiments/replication.sh 8 9        # just these seeds
#
# Each finished run's small results (eval.jsonl, the model's config.json, the fold metrics.json)
# are copied to docs/experiments/replication/ so they can be committed and a later session on a
# fresh machine carries on from there: a run already recorded there is skipped. Models and score
# matrices stay under runs/ (not in git). The test is run once, when all 15 pairs are recorded:
#
#   python docs/experiments/pretrain_figures.py docs/experiments/replication --out /tmp/replication \
#       --folds docs/experiments/replication/eval-folds --seeds 8-22 --arms con mf
set -euo pipefail
cd "$(dirname "$0")/../.."
RECORD=docs/experiments/replication
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=($(seq 8 22))

recorded() {  # run name -> true when its results are all in $RECORD
  [ -f "$RECORD/$1/eval.jsonl" ] && [ -f "$RECORD/$1/model/config.json" ] &&
    for k in 2 3 4 5; do [ -f "$RECORD/eval-folds/fold$k/$1/metrics.json" ] || return 1; done
}

one_run() {  # arm seed
  local arm=$1 seed=$2 name="lit-$1-s$2" extra=()
  recorded "$name" && { echo "$name: recorded, skipped"; return; }
  [ "$arm" = mf ] && extra=(
    'train.lr_multipliers={text.encoder.layer.4.crossattention: 0.2, text.encoder.layer.5.crossattention: 0.2, matching_head: 0.2, lm_head: 4, condition_adapters: 4}'
    model.matching_pooling=mean model.matching_negatives=random)
  [ "$arm" = con ] && extra=(train.objectives=[contrastive])
  mkdir -p runs/logs
  if [ ! -f "runs/$name/model/config.json" ]; then
    echo "$name: training ($(date -u +%H:%M))"
    mico-chat pretrain configs/pretrain/tiny_synth.yaml "train.output_dir=runs/$name" \
      "train.seed=$seed" "${extra[@]}" > "runs/logs/$name.log" 2>&1
  fi
  for k in 2 3 4 5; do
    echo "$name: scoring fold $k ($(date -u +%H:%M))"
    OMP_NUM_THREADS=1 mico-chat eval retrieval --model "runs/$name/model" \
      --data "runs/data/heldout$k/captions.jsonl" --modality video --modality audio --dual-softmax \
      --no-progress --out "runs/eval-folds/fold$k/$name" >> "runs/logs/$name.log" 2>&1
  done
  mkdir -p "$RECORD/$name/model"
  cp "runs/$name/eval.jsonl" "$RECORD/$name/"
  cp "runs/$name/model/config.json" "$RECORD/$name/model/"
  for k in 2 3 4 5; do
    mkdir -p "$RECORD/eval-folds/fold$k/$name"
    cp "runs/eval-folds/fold$k/$name/metrics.json" "$RECORD/eval-folds/fold$k/$name/"
  done
  echo "$name: recorded ($(date -u +%H:%M))"
}
export -f one_run recorded
export RECORD

# The data (seconds to make); the same seeds as the experiment's, so the same worlds.
[ -f runs/data/train/captions.jsonl ] ||
  mico-chat data synth --out runs/data/train --n 4000 --seed 0 --split train --speech off
for k in 2 3 4 5; do
  [ -f "runs/data/heldout$k/captions.jsonl" ] ||
    mico-chat data synth --out "runs/data/heldout$k" --n 1000 --seed "$k" --split heldout --speech off
done
[ -f runs/data/heldout/captions.jsonl ] ||
  mico-chat data synth --out runs/data/heldout --n 1000 --seed 1 --split heldout --speech off

# mf (the long run) before con of each seed, so the two workers finish pairs in seed order.
for s in "${seeds[@]}"; do echo "mf $s"; echo "con $s"; done |
  xargs -P 2 -L 1 bash -c 'one_run "$0" "$1"'

done=0
for s in $(seq 8 22); do recorded "lit-con-s$s" && recorded "lit-mf-s$s" && done=$((done + 1)); done
echo "replication: $done of 15 pairs recorded in $RECORD"
if [ "$done" = 15 ]; then
  echo "all pairs recorded: run the test once (docs/pretraining.md):"
  echo "  python docs/experiments/pretrain_figures.py $RECORD --out /tmp/replication --folds $RECORD/eval-folds --seeds 8-22 --arms con mf"
fi
