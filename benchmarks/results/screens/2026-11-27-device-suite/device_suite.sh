#!/bin/bash
# The suite across the device's 16 cores: three invocations into one --out, longest tasks spread out, then a merge.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 MUJOCO_GL=egl
nproc; lscpu | grep -E "Model name|^CPU\(s\)"
python3 -c "import torch, gymnasium, mujoco, stable_baselines3 as s; print(torch.__version__, gymnasium.__version__, mujoco.__version__, s.__version__)" || exit 4
D=/tmp/suite-dev
S="python3 benchmarks/suite.py --stop-at-threshold --out $D"
date -u
timeout 500 $S --jobs 6 --tasks MountainCar-v0 > $OUT/a.log 2>&1 &
timeout 500 $S --jobs 6 --tasks InvertedDoublePendulum-v5 suite_envs:BeaconReach MountainCarContinuous-v0 > $OUT/b.log 2>&1 &
timeout 500 $S --jobs 4 --tasks InvertedPendulum-v5 Acrobot-v1 Pendulum-v1 CartPole-v1 > $OUT/c.log 2>&1 &
wait
date -u
ls $D/logs/*.json | wc -l
if [ "$(ls $D/logs/*.json | wc -l)" -ge 48 ]; then timeout 60 $S --jobs 16 --reuse > $OUT/merge.log 2>&1; fi
tail -3 $OUT/a.log $OUT/b.log $OUT/c.log
cd /tmp && tar czf $OUT/suite-dev.tgz suite-dev/logs suite-dev/suite.json suite-dev/suite.md suite-dev/suite.png 2>/dev/null || tar czf $OUT/suite-dev.tgz suite-dev/logs
cat $D/suite.md 2>/dev/null | head -20
