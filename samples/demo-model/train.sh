#!/bin/sh
# Reproduces the demo model (samples/demo-model) from MedMNIST v2's
# PneumoniaMNIST + BreastMNIST train splits (../shared/data/medmnist, or
# $MEDMNIST), validating on the val splits, then reports the zero-shot test
# figures. BreastMNIST's train archive is listed four times: each of its 546
# images then appears 4 times per epoch (2,184 of the epoch's 6,066 samples),
# an oversampling of the small set; --balance then evens the labels within
# each label set. Augmentation: a random resized crop (area 0.8-1), left-right
# mirroring (neither task depends on the side) and brightness/contrast jitter
# of up to 15 %. The model was trained with THREADS=1 (default; two such runs
# shared the machine's two cores).
# Usage: samples/demo-model/train.sh [BUILD_DIR] [OUT_DIR]
#   BUILD_DIR  where unimed and unimed-train were built (default: build)
#   OUT_DIR    the trained model (default: samples/demo-model itself)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${1:-$ROOT/build}
OUT=${2:-$HERE}
M=${MEDMNIST:-$ROOT/../shared/data/medmnist}
TRAIN=$BUILD/tools/train/unimed-train
UNIMED=$BUILD/tools/unimed
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# one labels CSV per split for both data sets (same columns)
for split in train val; do
  { cat "$M/pneumoniamnist-$split-labels.csv"; tail -n +2 "$M/breastmnist-$split-labels.csv"; } \
    > "$TMP/$split.csv"
done
start=$(date +%s)
"$TRAIN" \
  --archive "$M/pneumoniamnist-train.zip" \
  --archive "$M/breastmnist-train.zip" --archive "$M/breastmnist-train.zip" \
  --archive "$M/breastmnist-train.zip" --archive "$M/breastmnist-train.zip" \
  --labels "$TMP/train.csv" \
  --val-archive "$M/pneumoniamnist-val.zip" --val-archive "$M/breastmnist-val.zip" \
  --val-labels "$TMP/val.csv" \
  --label-set "$HERE/labelsets/pneumonia.json" --label-set "$HERE/labelsets/breast.json" \
  --config "$HERE/train-config.json" \
  --epochs "${EPOCHS:-24}" --batch 64 --lr 1e-3 --warmup 100 --wd 0.1 --balance \
  --augment --flip --jitter 0.15 --seed 0 \
  --threads "${THREADS:-1}" --keep-best --out "$TMP/run"
end=$(date +%s)
echo "training wall time: $((end - start)) s" >&2
# the epoch with the best mean validation AUC becomes the demo model
mkdir -p "$OUT"
cp "$TMP/run/best/config.json" "$TMP/run/best/vocab.txt" "$TMP/run/best/model.safetensors" "$OUT/"
cp "$TMP/run/train_log.csv" "$TMP/run/val_log.csv" "$OUT/" 2>/dev/null || true
for set in pneumoniamnist:pneumonia breastmnist:breast; do
  name=${set%%:*}; ls=${set##*:}
  "$UNIMED" evaluate --model "$OUT" --archive "$M/$name-test.zip" \
    --labels "$M/$name-test-labels.csv" --label-set "$HERE/labelsets/$ls.json" --threads 2
done
