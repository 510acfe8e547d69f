#!/bin/bash
# --device cuda end to end on the lent machine: each algo trains a little, then evaluate and imagine.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/gymnasium-*.whl .whl/farama_*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
D="python3 -m dreamercli"
R=/tmp/r
n=0
t() { n=$((n+1)); local s=$SECONDS; timeout 100 "$@" > $OUT/cmd$n.log 2>&1; local rc=$?; echo "rc=$rc $((SECONDS-s)) s: ${*:4}"; tail -2 $OUT/cmd$n.log; }
t $D train --env Pendulum-v1 --device cuda --steps 500 --eval-every 250 --eval-episodes 2 --runs-dir $R --name mf
t $D train --env CartPole-v1 --algo dreamer --device cuda --steps 400 --eval-every 200 --eval-episodes 2 --runs-dir $R --name dr
t $D train --env Pendulum-v1 --algo hybrid --device cuda --steps 400 --eval-every 200 --eval-episodes 2 --runs-dir $R --name hy
t $D evaluate $R/mf --device cuda --episodes 3
t $D imagine $R/dr --device cuda --horizon 10
t $D evaluate $R/hy --device cpu --episodes 2
for f in $R/*/summary.json; do echo $f; head -c 400 $f; echo; done
ls $R/mf
