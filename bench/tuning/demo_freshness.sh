#!/usr/bin/env bash
# Tries for the demo's retrieval-vs-popularity ratio (issue 13): the 3 demo days through the step CLIs
# (validate_day, features, sample, train_two_tower, evaluate_two_tower), one data root per try.
#   bench/tuning/demo_freshness.sh SEED TAG [--set key=value ...]   (env DAILYREC_CONFIG for a spec file,
#   e.g. bench/tuning/demo_freshness_features.yaml); roots under ${OUT:-/tmp/fr}/runs/TAG, logs generated
#   once per seed under ${OUT:-/tmp/fr}/s$SEED/data. Then: ./dev python bench/tuning/demo_freshness_collect.py
set -euo pipefail
cd "$(dirname "$0")/../.."
seed=$1; tag=$2; shift 2
out=${OUT:-/tmp/fr}
src=$out/s$seed/data
[ -d $src/logs ] || DAILYREC_DATA_ROOT=$src ./dev python -m dailyrec.demo.generator --start-date 2026-11-01 --days 3 --set demo.seed=$seed
root=$out/runs/$tag; rm -rf $root; mkdir -p $root; cp -r $src/* $root/
export DAILYREC_DATA_ROOT=$root
start=$(date +%s)
for d in 2026-11-01 2026-11-02 2026-11-03; do
  ./dev python -m tasks.ingest.validate_day --cur-date $d "$@" >> $root/steps.log 2>&1
  for st in features sample train_two_tower evaluate_two_tower; do
    ./dev python -m tasks.retrieval.$st --cur-date $d "$@" >> $root/steps.log 2>&1
  done
done
echo "$tag $(( $(date +%s) - start ))s"
