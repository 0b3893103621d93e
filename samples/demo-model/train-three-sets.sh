#!/bin/sh
# The three-data-set recipe of the next demo model (not yet the shipped one:
# see README.md and docs/TRAINING.md for its candidates and where they fall
# short): trains on MedMNIST v2's PneumoniaMNIST + BreastMNIST + RetinaMNIST
# train splits (../shared/data/medmnist, or $MEDMNIST), validates on the val
# splits, keeps the epoch with the best mean validation AUC, then reports the
# zero-shot test figures of the three task label sets and of the modality set
# and writes the model card (model-card.json) with them. Evaluate the test
# splits only for the model chosen on validation.
#
# Sampling: no --balance; each data set's labels come in about the
# proportions of its test split: the 388 normal PneumoniaMNIST train studies
# are copied into a folder (extract_studies.py) listed 4 more times (1,940
# normal : 3,494 pneumonia, 1.8 : 1; test 1.7 : 1); BreastMNIST's train
# archive is listed 4 times (its own 2.7 : 1, as the test split);
# RetinaMNIST's twice (its own grade mix, as the test split). (The zero-shot
# decision does not follow these proportions: see docs/TRAINING.md.)
# Augmentation: a random resized crop (area 0.8-1),
# left-right mirroring (no task depends on the side; fundus photographs of
# left and right eyes are mirror images) and brightness/contrast jitter of
# up to 15 %. --threads 1 (THREADS=...); EPOCHS=... (default 12); extra
# unimed-train options after OUT_DIR (e.g. --label-aware).
# Usage: samples/demo-model/train-three-sets.sh [BUILD_DIR] [OUT_DIR] [OPTION...]
#   BUILD_DIR  where unimed and unimed-train were built (default: build)
#   OUT_DIR    the trained model (default: BUILD_DIR/demo-model-three-sets)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${1:-$ROOT/build}
OUT=${2:-$BUILD/demo-model-three-sets}
[ $# -gt 2 ] && shift 2 || set --
M=${MEDMNIST:-$ROOT/../shared/data/medmnist}
TRAIN=$BUILD/tools/train/unimed-train
UNIMED=$BUILD/tools/unimed
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# one labels CSV per split for the three data sets (same columns)
for split in train val test; do
  { cat "$M/pneumoniamnist-$split-labels.csv"; tail -n +2 "$M/breastmnist-$split-labels.csv"
    tail -n +2 "$M/retinamnist-$split-labels.csv"; } > "$TMP/$split.csv"
done
/usr/bin/python3 "$HERE/extract_studies.py" "$M/pneumoniamnist-train.zip" \
  "$M/pneumoniamnist-train-labels.csv" normal "$TMP/pneumonia-normal" >&2
N=$TMP/pneumonia-normal
B=$M/breastmnist-train.zip
R=$M/retinamnist-train.zip
start=$(date +%s)
"$TRAIN" \
  --archive "$M/pneumoniamnist-train.zip" \
  --archive "$B" --archive "$B" --archive "$B" --archive "$B" \
  --archive "$R" --archive "$R" \
  --archive "$N" --archive "$N" --archive "$N" --archive "$N" \
  --labels "$TMP/train.csv" \
  --val-archive "$M/pneumoniamnist-val.zip" --val-archive "$M/breastmnist-val.zip" \
  --val-archive "$M/retinamnist-val.zip" --val-labels "$TMP/val.csv" \
  --label-set "$HERE/labelsets/pneumonia.json" --label-set "$HERE/labelsets/breast.json" \
  --label-set "$HERE/labelsets/retina.json" \
  --config "$HERE/train-config.json" \
  --epochs "${EPOCHS:-12}" --batch 64 --lr 1e-3 --warmup 100 --wd 0.1 \
  --augment --flip --jitter 0.15 --seed 0 \
  --threads "${THREADS:-1}" --keep-best --out "$TMP/run" "$@"
end=$(date +%s)
echo "training wall time: $((end - start)) s" >&2
# the epoch with the best mean validation AUC becomes the model
mkdir -p "$OUT/labelsets"
cp "$TMP/run/best/config.json" "$TMP/run/best/vocab.txt" "$TMP/run/best/model.safetensors" "$OUT/"
cp "$HERE"/labelsets/*.json "$OUT/labelsets/"
cp "$TMP/run/train_log.csv" "$TMP/run/val_log.csv" "$OUT/" 2>/dev/null || true
for set in pneumoniamnist:pneumonia breastmnist:breast retinamnist:retina; do
  name=${set%%:*}; ls=${set##*:}
  printf '%s ' "$name" >> "$TMP/test.jsonl"
  "$UNIMED" evaluate --model "$OUT" --archive "$M/$name-test.zip" \
    --labels "$M/$name-test-labels.csv" --label-set "$HERE/labelsets/$ls.json" --threads 2 \
    >> "$TMP/test.jsonl"
done
# the modality set on the three test splits together
awk -F, 'NR == 1 { print "StudyInstanceUID,label"; next }
         $2 ~ /^PN/ { print $1 ",chest X-ray"; next }
         $2 ~ /^BR/ { print $1 ",breast ultrasound"; next }
         $2 ~ /^RE/ { print $1 ",fundus photograph" }' "$TMP/test.csv" > "$TMP/modality.csv"
printf 'modality ' >> "$TMP/test.jsonl"
"$UNIMED" evaluate --model "$OUT" --archive "$M/pneumoniamnist-test.zip" \
  --archive "$M/breastmnist-test.zip" --archive "$M/retinamnist-test.zip" \
  --labels "$TMP/modality.csv" --label-set "$HERE/labelsets/modality.json" --threads 2 \
  >> "$TMP/test.jsonl"
cat "$TMP/test.jsonl"
# the model card: the label sets it was validated with and their test figures
/usr/bin/python3 "$HERE/write_card.py" "$OUT" "$TMP/test.jsonl"
