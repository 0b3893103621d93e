#!/usr/bin/env bash
# The main job until the Orthanc plugin lands: sets up, builds, makes the demo
# model, and analyses sample DICOM studies with the `unimed` command —
# inspect, the exact model input (PNG previews), findings against the shipped
# label sets, and a DICOM SR per study.
#
# The demo model has RANDOM weights (made by tests/reference/make_model.py):
# the probabilities it prints are meaningless. Convert the real UniMed-CLIP
# weights (README.md) and pass --model DIR to see real findings.
#
#   scripts/demo.sh [--model DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
model=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target unimed
unimed=build/tools/unimed
out=build/demo
mkdir -p "$out"

if [ -z "$model" ]; then
  model=$out/model
  if [ ! -f "$model/model.safetensors" ]; then
    echo "demo: making the demo model (ViT-B/16 + BERT-base size, random weights) in $model"
    /usr/bin/python3 tests/tokenizer/make_vocab.py --size 30522 --layout bert --out "$out/vocab.txt"
    /usr/bin/python3 tests/reference/make_model.py --config full --seed 0 --vocab "$out/vocab.txt" --out "$model"
  fi
fi
"$unimed" info --model "$model" | scripts/demo_report.py info

# Sample studies: DICOM files that Debian's python3-pydicom installs.
samples=/usr/lib/python3/dist-packages/pydicom/data/test_files
files=(CT_small.dcm MR_small.dcm JPEG2000.dcm SC_rgb_jpeg_gdcm.dcm)
echo
echo "== what the files are (unimed inspect)"
for f in "${files[@]}"; do
  "$unimed" inspect "$samples/$f" | scripts/demo_report.py inspect
done

echo
echo "== the model's input (unimed preprocess -> $out/*.png)"
for f in "${files[@]}"; do
  "$unimed" preprocess --model "$model" "$samples/$f" --out "$out/${f%.dcm}.f32" --png "$out/${f%.dcm}.png" >/dev/null
  echo "$out/${f%.dcm}.png"
done

echo
echo "== findings (unimed analyze; one SR per study in $out/reports/)"
"$unimed" analyze --model "$model" --out-dir "$out/reports" --cache "$out/cache" \
  "${files[@]/#/$samples/}" > "$out/findings.jsonl"
scripts/demo_report.py findings < "$out/findings.jsonl"
echo
echo "demo: random weights — the probabilities above are meaningless. See README.md to use UniMed-CLIP's weights."
