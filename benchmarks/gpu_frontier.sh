#!/usr/bin/env bash
# Issue 23's GPU checks as one short script (about 10 minutes on an H200), for a session that
# is lent a GPU: run it from the repository root on the device machine, e.g. with the device
# tool, `bash benchmarks/gpu_frontier.sh "$OUT"`, and commit what it writes under results/.
#   1. the compiled env step and the compiled rollout step compute what the eager ones do,
#      on CUDA (the CPU tests' device parameter): pytest tests/test_torch_envs.py
#   2. CartPole env steps/s at 16k-1M envs: eager float32 vs compiled (CUDA graph)
#   3. PPO's rollout collection at 1k-256k envs: eager, env step compiled, whole rollout
#      step compiled (policy + sampling + env + normalization as one CUDA graph)
#   4. PPO solving CartPole on 1024 / 16384 torch envs with the compiled env
#   5. SAC / off-policy MDPO updates/s on CUDA: float32, bf16, compiled (Hopper-v5)
set -euo pipefail
OUT=${1:-results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
timeout 120 python -m pytest -q -p no:cacheprovider tests/test_torch_envs.py -k "(compiled or captured) and cuda" \
  2>&1 | tail -3 | tee "$OUT/compiled_env_tests_cuda.txt" || true  # the figures still come
timeout 180 python benchmarks/torch_envs.py --device cuda --part speed --envs CartPole-v1 \
  --n-envs 16384 65536 262144 1048576 --repeats 3 --seconds 1 \
  --variants "torch float32" "torch float32 compiled" --out "$OUT/torch_envs_cuda_compiled"
timeout 120 python benchmarks/torch_envs.py --device cuda --part rollout \
  --n-envs 1024 16384 262144 --repeats 2 --seconds 1 --out "$OUT/torch_envs_cuda_compiled"
timeout 150 python benchmarks/torch_envs.py --device cuda --part ppo --seeds 0 1 2 \
  --ppo-variants "torch, 1024 envs" "torch, 1024 envs, compiled env" \
  "torch, 1024 envs, compiled env and update" "torch, 16384 envs, compiled env" \
  --out "$OUT/torch_envs_cuda_compiled"
timeout 120 python benchmarks/speed_offpolicy.py --device cuda --repeats 1 --env Hopper-v5 \
  --kinds SAC SAC+bf16 SAC+bf16+compile OffPolicyMDPO+bf16+compile --out "$OUT/speed_offpolicy_cuda"
echo "done: $OUT"
