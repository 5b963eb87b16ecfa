#!/usr/bin/env bash
# One GPU session: the reward-model comparison (issue #4), RL from the same SFT start with
# the AI-RM and the human-RM rewards, held-out samples for win rates, and the rollout
# benchmark on CUDA. Every stage appends to $OUT/log.txt and re-packs $OUT/results.tgz, so a
# session cut short still returns what finished. Sizes come from the environment:
#
#   DEVICE=cuda DATA=../shared/data bash benchmarks/gpu_session.sh
#
# On CPU with small sizes (the smoke run before a GPU session):
#   DEVICE=cpu RM_EPOCHS=1 RM_MAX_STEPS=2 RL_STEPS=2 RL_BATCH=2 SAMPLE_LIMIT=2 \
#     BENCH=0 OUT=/tmp/gpu_smoke bash benchmarks/gpu_session.sh
set -u
OUT=${OUT:-/tmp/gpu_session}
DATA=${DATA:-../shared/data}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
POLICY=${POLICY:-smollm2-135m-instruct}
LABELS=${LABELS:-reports/labels/tldr_hc-base-0shot-qwen1.5b.jsonl}
RM_EPOCHS=${RM_EPOCHS:-2}
RM_LR=${RM_LR:-1e-5}
RM_MAX_STEPS=${RM_MAX_STEPS:-}
TEST_FRACTION=${TEST_FRACTION:-0.3}
RL_STEPS=${RL_STEPS:-100}
RL_BATCH=${RL_BATCH:-32}
RL_LR=${RL_LR:-3e-6}
TRAIN_PROMPTS=${TRAIN_PROMPTS:-400}
SAMPLE_LIMIT=${SAMPLE_LIMIT:-100}
BENCH=${BENCH:-1}
THREADS=${THREADS:-4}
W=${W:-$OUT/work}
mkdir -p "$OUT" "$W"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false RLAIF_GYM_DATA=$DATA
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
LOG=$OUT/log.txt
CLI="$PY -m rlaif_gym.cli"
log() { echo "[$(date +%T)] $*" | tee -a "$LOG"; }
run() { log "\$ $*"; "$@" 2>&1 | grep -v -E "Loading weights|it/s\]$" | tee -a "$LOG"; }
pack() { tar -czf "$OUT/results.tgz" -C "$W" --exclude='*.safetensors' --exclude='*.pt' \
           --exclude='*.gguf' --exclude='tokenizer*' . 2>/dev/null; }
t_start=$(date +%s)

log "device $DEVICE; $($PY -c 'import torch,transformers;print("torch",torch.__version__,"transformers",transformers.__version__,"cuda",torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")')"
max_steps=${RM_MAX_STEPS:+--max-steps $RM_MAX_STEPS}

# 1. reward models on the same post-split train pairs: AI soft labels vs human labels
run $CLI train-rm --labels "$LABELS" --task tldr --data-dir "$DATA" --high-confidence \
  --test-fraction "$TEST_FRACTION" --split-seed 0 --epochs "$RM_EPOCHS" --lr "$RM_LR" \
  --batch-size 8 --base "$POLICY" --device "$DEVICE" --threads "$THREADS" $max_steps \
  --out "$W/rm-ai" --no-progress
run $CLI train-rm --human --task tldr --data-dir "$DATA" --high-confidence \
  --split-file "$W/rm-ai/split.json" --epochs "$RM_EPOCHS" --lr "$RM_LR" \
  --batch-size 8 --base "$POLICY" --device "$DEVICE" --threads "$THREADS" $max_steps \
  --out "$W/rm-human" --no-progress
for rm in rm-ai rm-human; do
  run $CLI eval-rm "$W/$rm" --task tldr --data-dir "$DATA" --high-confidence --json \
    --device "$DEVICE" --threads "$THREADS" | tail -1 > "$W/$rm-eval.json"
done
pack; log "stage rm done after $(( $(date +%s) - t_start )) s"

# 2. RL from the same SFT start with the AI-RM reward (RLAIF), then held-out samples
rl() {  # name reward-dir
  run $CLI train --env RLAIF-TLDR-v0 --reward "$2" --reward-option device="$DEVICE" \
    --policy "$POLICY" --steps "$RL_STEPS" --batch-size "$RL_BATCH" --lr "$RL_LR" \
    --value-lr 1e-5 --kl-coef 0.05 --max-new-tokens 48 --max-prompt-tokens 384 \
    --split test --train-prompts "$TRAIN_PROMPTS" --data-dir "$DATA" \
    --checkpoint-every "$RL_STEPS" --device "$DEVICE" --threads "$THREADS" \
    --out "$W/$1" --no-progress
}
rl rl-ai-rm "$W/rm-ai"
pack; log "stage rl-ai-rm done after $(( $(date +%s) - t_start )) s"
run $PY research/sample_heldout.py --skip "$TRAIN_PROMPTS" --data-dir "$DATA" \
  --policy sft="$POLICY" --policy rl-ai-rm="$W/rl-ai-rm/checkpoint/policy" \
  --limit "$SAMPLE_LIMIT" --device "$DEVICE" --threads "$THREADS" --out "$W/heldout.jsonl"
pack; log "stage samples done after $(( $(date +%s) - t_start )) s"

# 3. rollout through the vector env vs model.generate on this device
if [ "$BENCH" = 1 ]; then
  run $PY benchmarks/bench_rollout.py --device "$DEVICE" --batch-size 64 --max-new-tokens 64 \
    --reps 5 --threads "$THREADS" --data-dir "$DATA"
  pack; log "stage bench done after $(( $(date +%s) - t_start )) s"
fi

# 4. the same RL with the human-RM reward (RLHF at our scale)
rl rl-human-rm "$W/rm-human"
run $PY research/sample_heldout.py --skip "$TRAIN_PROMPTS" --data-dir "$DATA" \
  --policy rl-human-rm="$W/rl-human-rm/checkpoint/policy" \
  --limit "$SAMPLE_LIMIT" --device "$DEVICE" --threads "$THREADS" \
  --out "$W/heldout_human.jsonl"
pack; log "all stages done after $(( $(date +%s) - t_start )) s"
