#!/usr/bin/env bash
# The GPU measurements that docs/performance.md records, in one call (about 4 minutes on an H100):
#   bash bench/gpu_check.sh
# 1. ViT-B/32 training step, batch 128: fp32 vs bf16, each with the patch embedding as a matrix product (the
#    backbone's) and as the original convolution (the suspect of the 2026-11-25 bf16 slowdown);
# 2. the costliest GPU operators of a bf16 step;
# 3. the data pipeline on photo-sized JPEGs: decoding vs the image cache, first and later epochs.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(), '|', torch.backends.cudnn.version())"
python -m bench.train_speed --batch-size 128 --precision fp32,bf16 --patch-embed linear,conv --steps 20
python -m bench.train_speed --batch-size 128 --precision bf16 --steps 5 --profile 2>&1 | sed -n '1,30p'
python -m bench.data_speed --images 3000 --num-workers "$(( $(nproc) < 8 ? $(nproc) : 8 ))"
