#!/usr/bin/env bash
# Rebuild the bundled models from scratch, on CPU, exactly as they were built.
# Usage: bash models/build.sh [WORK_DIR]   (needs `pip install -e ".[all]"`; ~7 GB of disk)
# Wall times on the 2-core development machine are in the model cards (models/*.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-build}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$work"

# 1. the synthetic corpus: 14 speakers x 120 sentences (TTS + the facecap ARKit rig), piper and
#    espeak-ng voices and the grammar sentences (the corpus these models were trained on; the
#    default `avtalk synth` now also draws on festival voices and WordNet's sentences)
avtalk synth "$work/corpus" --subjects 14 --sentences 120 --seed 0 \
    --tts piper,espeak --sentences-file "$here/../talkinghead_cli/data/synthetic/sentences.txt"

# 2. stage 1: the lip-reading expert on renders of ground-truth meshes
avtalk finetune-expert --dataset synthetic --data-root "$work/corpus" -o "$work/runs/expert" \
    --config "$here/expert-tiny.json"

# 3. frozen Whisper tiny.en features of every utterance (cached in $work/corpus/features/), then
#    a shared start for both animators (vertex MSE + lip-vertex loss, same seed)
avtalk features --dataset synthetic --data-root "$work/corpus"
avtalk train --dataset synthetic --data-root "$work/corpus" -o "$work/runs/base" \
    --size tiny --epochs 12 --seed 0 --encoder whisper-tiny-ct2

# 4. stage 2: the same animator continued with and without the lip-reading loss
#    (same start, seed, epochs and cosine learning-rate decay; the MSE twin trains on the vertex
#    MSE, the AV twin adds the lip-vertex loss and lambda_av * L_av; both add the mouth-opening
#    term (lambda_gap 3, shut frames weighted 5x) and the mesh-Laplacian term (lambda_lap 100):
#    see models/avtalk-tiny.md).
twin=(--dataset synthetic --data-root "$work/corpus" --size tiny --epochs 2 --seed 1 --lr 3e-5
      --lr-schedule cosine --init-from "$work/runs/base/best.pt" --encoder whisper-tiny-ct2
      --lambda-gap 3 --gap-closed-weight 5 --lambda-lap 100)
avtalk train "${twin[@]}" -o "$work/runs/mse" --lambda-rlv 0
avtalk train "${twin[@]}" -o "$work/runs/av" --av-loss --expert "$work/runs/expert/best.pt" --lambda-av 1e-8

# 5. the paper's table in our setting
for split in test test_b; do
  avtalk score --dataset synthetic --data-root "$work/corpus" --split "$split" \
      -c "$work/runs/av/best.pt" -c "$work/runs/mse/best.pt" \
      --expert "$work/runs/expert/best.pt" --json "$work/score-$split.json"
done

# 6. copy into models/ (the registry names them)
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
