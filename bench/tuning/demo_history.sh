#!/usr/bin/env bash
# history off vs on over the 3 demo days, step by step (same stages as the daily DAG's chain)
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGES="ingest.validate_day retrieval.features retrieval.sample retrieval.train_two_tower retrieval.evaluate_two_tower retrieval.export_embeddings retrieval.build_index retrieval.publish_redis serving.serving_check"
for mode in off on; do
  root=${OUT:-/tmp/uh-demo}/$mode/data
  export DAILYREC_DATA_ROOT=$root
  if [ $mode = on ]; then export DAILYREC__FEATURES__USER_HISTORY__ENABLED=true; else unset DAILYREC__FEATURES__USER_HISTORY__ENABLED || true; fi
  [ -d $root/logs ] || ./dev python -m dailyrec.demo.generator --start-date 2026-11-01 --days 3
  for d in 2026-11-01 2026-11-02 2026-11-03; do
    start=$(date +%s)
    ./dev python -c "import sys
from dailyrec import stages
for s in sys.argv[2:]:
    stages.call(s, {'cur_date': sys.argv[1], 'overrides': {}})" $d $STAGES > ${OUT:-/tmp/uh-demo}/$mode-$d.log 2>&1
    echo "$mode $d $(( $(date +%s) - start ))s"
  done
done
