#!/usr/bin/env bash
# Every GPU measurement in one go (a few minutes on an H100-class GPU). Writes JSON under
# benchmarks/results/ (and copies it to $OUT when that is set).
#   bash benchmarks/gpu.sh
# Needs python3 with torch (CUDA), torchvision, numpy, pillow, matplotlib, tqdm; the package is
# used from src/ without installing it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
results=benchmarks/results
mkdir -p "$results"
python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.__version__, torch.cuda.get_device_name())'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# 1. Images/s and peak memory against batch size, fp32 and bf16, data on the device.
python3 benchmarks/speed.py --device cuda --variants fp32,bf16 --batch-sizes 32,64,128,256,512,1024 \
    --steps 200 --warmup 20 --json "$results/gpu_speed.json"

# 2. One epoch (60,000 images) of the tutorial preset through the command line, per precision.
tmp=$(mktemp -d)
for precision in fp32 bf16; do
  start=$(date +%s.%N)
  python3 -m dcgan train --preset tutorial --epochs 1 --device cuda --precision "$precision" --quiet \
      --sample-every 0 --checkpoint-every 0 --log-every 1875 --out "$tmp/run-$precision" | tee "$tmp/$precision.txt"
  end=$(date +%s.%N)
  python3 - "$precision" "$start" "$end" "$tmp/$precision.txt" "$results/gpu_epoch_$precision.json" <<'PY'
import json, re, sys
precision, start, end, log, out = sys.argv[1:]
speed = float(re.search(r"images_per_s=([\d.]+)", open(log).read()).group(1))
result = {"precision": precision, "process_wall_s": round(float(end) - float(start), 2),
          "images_per_s_after_warmup": speed, "epoch_s_at_that_speed": round(60000 / speed, 2)}
print(result)
open(out, "w").write(json.dumps(result, indent=2) + "\n")
PY
done

# 3. Data-parallel scaling: images/s at 1..N GPUs (torchrun, one process per GPU, NCCL), the same
#    global batch of 256 split over the GPUs.
ngpu=$(python3 -c 'import torch; print(torch.cuda.device_count())')
for n in $(seq 1 "$ngpu"); do
  python3 -m torch.distributed.run --standalone --nproc_per_node "$n" -m dcgan train --preset tutorial \
      --batch-size 256 --steps 600 --device cuda --quiet --sample-every 0 --checkpoint-every 0 --log-every 600 \
      --out "$tmp/ddp-$n" | tee "$tmp/ddp-$n.txt"
done
python3 - "$ngpu" "$tmp" "$results/gpu_scaling.json" <<'PY'
import json, re, sys
ngpu, tmp, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
speeds = {n: float(re.search(r"images_per_s=([\d.]+)", open(f"{tmp}/ddp-{n}.txt").read()).group(1))
          for n in range(1, ngpu + 1)}
result = {"global_batch": 256, "images_per_s_by_gpus": speeds,
          "efficiency": {n: round(v / (n * speeds[1]), 3) for n, v in speeds.items()}}
print(result)
open(out, "w").write(json.dumps(result, indent=2) + "\n")
PY

# 4. The dcgan preset (64x64 colour, batch 128) on a synthetic folder of 6,000 colour images, per precision.
python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from throughput_dcgan import make_folder; \
make_folder(__import__('pathlib').Path('$tmp/colour'), 6000, 80, 64)"
for precision in fp32 bf16; do
  DCGAN_CACHE_DIR="$tmp/cache" python3 -m dcgan train --preset dcgan --data "$tmp/colour" --steps 300 --device cuda \
      --precision "$precision" --quiet --sample-every 0 --checkpoint-every 0 --out "$tmp/dcgan-$precision" \
      | tee "$tmp/dcgan-$precision.txt"
done
python3 - "$tmp" "$results/gpu_dcgan.json" <<'PY'
import json, re, sys
tmp, out = sys.argv[1], sys.argv[2]
result = {p: float(re.search(r"images_per_s=([\d.]+)", open(f"{tmp}/dcgan-{p}.txt").read()).group(1))
          for p in ("fp32", "bf16")}
print({"dcgan_preset_images_per_s": result})
open(out, "w").write(json.dumps({"dcgan_preset_images_per_s": result, "steps": 300}, indent=2) + "\n")
PY
rm -rf "$tmp"
if [[ -n "${OUT:-}" ]]; then cp "$results"/gpu_*.json "$OUT"/; fi
