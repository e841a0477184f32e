#!/usr/bin/env bash
# Rebuild the bundled models from scratch, on CPU, exactly as they were built.
# Usage: bash models/build.sh [WORK_DIR]   (needs `pip install -e ".[all]"` and festival; ~40 GB of disk)
# Wall times on the 2-core development machine are in the model cards (models/*.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-build}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$work"

# 1. the synthetic corpus: 14 speakers x 120 sentences (TTS + the facecap ARKit rig), piper and
#    espeak-ng voices and the grammar sentences (the corpus the first base is trained on; step 3
#    builds the large corpus with the default voices and sentences)
avtalk synth "$work/corpus" --subjects 14 --sentences 120 --seed 0 \
    --tts piper,espeak --sentences-file "$here/../talkinghead_cli/data/synthetic/sentences.txt"

# 2. frozen Whisper tiny.en features of every utterance (cached in $work/corpus/features/), then
#    a first base (vertex MSE + lip-vertex loss) on that corpus
avtalk features --dataset synthetic --data-root "$work/corpus"
avtalk train --dataset synthetic --data-root "$work/corpus" -o "$work/runs/base0" \
    --size tiny --epochs 12 --seed 0 --encoder whisper-tiny-ct2

# 3. the large corpus: 20 speakers x 380 sentences (7,600 utterances, 5,168 for training), every
#    default voice (piper, espeak-ng, festival) and the 5,000 built-in sentences; the base
#    continues on it for 3 + 3 epochs (same losses; its 12 speakers' styles carry over by name)
avtalk synth "$work/corpus5k" --subjects 20 --sentences 380 --seed 0
avtalk features --dataset synthetic --data-root "$work/corpus5k"
big=(--dataset synthetic --data-root "$work/corpus5k" --size tiny --epochs 3 --seed 0 --lr-schedule cosine
     --encoder whisper-tiny-ct2)
avtalk train "${big[@]}" -o "$work/runs/base1" --lr 1e-4 --init-from "$work/runs/base0/best.pt"
avtalk train "${big[@]}" -o "$work/runs/base" --lr 5e-5 --init-from "$work/runs/base1/best.pt"

# 4. stage 1: the lip-reading expert on renders of the large corpus's ground-truth meshes
#    (the rendered lip windows are cached in $work/lipcache and reused by a rerun)
avtalk finetune-expert --dataset synthetic --data-root "$work/corpus5k" -o "$work/runs/expert" \
    --config "$here/expert-tiny.json" --cache "$work/lipcache"

# 5. stage 2: the same animator continued with and without the lip-reading loss
#    (same start, seed, epoch and cosine learning-rate decay; the MSE twin trains on the vertex
#    MSE, the AV twin adds the lip-vertex loss and lambda_av * L_av of the step-4 expert, its
#    gradient on the vertices spread by 16 Laplacian smoothing steps; both add the mouth-opening
#    term (lambda_gap 3, shut frames weighted 10x) and the mesh-Laplacian term (lambda_lap 100):
#    see models/avtalk-tiny.md).
twin=(--dataset synthetic --data-root "$work/corpus5k" --size tiny --epochs 1 --seed 1 --lr 3e-5
      --lr-schedule cosine --init-from "$work/runs/base/best.pt" --encoder whisper-tiny-ct2
      --lambda-gap 3 --gap-closed-weight 10 --lambda-lap 100)
avtalk train "${twin[@]}" -o "$work/runs/mse" --lambda-rlv 0
avtalk train "${twin[@]}" -o "$work/runs/av" --av-loss --expert "$work/runs/expert/best.pt" --lambda-av 1e-7 \
    --av-smooth 16

# 6. the paper's table in our setting
for split in test test_b; do
  avtalk score --dataset synthetic --data-root "$work/corpus5k" --split "$split" \
      -c "$work/runs/av/best.pt" -c "$work/runs/mse/best.pt" \
      --expert "$work/runs/expert/best.pt" --json "$work/score-$split.json"
done

# 7. copy into models/ (the registry names them)
python - "$here" "$work" <<'PY'
import json, sys
from pathlib import Path
from talkinghead_cli.pretrained import sha256
from talkinghead_cli.checkpoint import release_copy  # drops optimizer state
here, work = Path(sys.argv[1]), Path(sys.argv[2])
for run, name in (("av", "avtalk-tiny-av"), ("mse", "avtalk-tiny-mse"), ("expert", "avtalk-expert-tiny")):
    release_copy(work / "runs" / run / "best.pt", here / f"{name}.pt")
reg = json.loads((here / "registry.json").read_text())
for entry in reg["models"].values():
    entry["sha256"] = sha256(here / entry["file"])
(here / "registry.json").write_text(json.dumps(reg, indent=2) + "\n")
PY
echo "done: models rebuilt; compare with the figures in models/avtalk-tiny.md ($work/score-*.json)"
