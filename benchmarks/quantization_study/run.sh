#!/bin/bash
# usage: run.sh NAME [flags...]  -- one demo run, nice'd, log to NAME.log
cd "$(dirname "$0")/../.." && mkdir -p results/quant_study
name=$1; shift
nice -n 10 .venv/bin/python -m experiments.train_nwp --preset=demo --progress=false --plot=false \
  --output_dir=results/quant_study/runs --experiment_name=$name "$@" > results/quant_study/$name.log 2>&1
echo "exit $?" >> results/quant_study/$name.log
