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
"$unimed" info --model "$model" | /usr/bin/python3 -c '
import json, sys
m = json.load(sys.stdin)
print(f"model: {m[\"name\"]} {m[\"version\"]} (hash {m[\"hash\"]}), BLAS kernel {m[\"blas_core\"]}")'

# Sample studies: DICOM files that Debian's python3-pydicom installs.
samples=/usr/lib/python3/dist-packages/pydicom/data/test_files
files=(CT_small.dcm MR_small.dcm JPEG2000.dcm SC_rgb_jpeg_gdcm.dcm)
echo
echo "== what the files are (unimed inspect)"
for f in "${files[@]}"; do
  "$unimed" inspect "$samples/$f" | /usr/bin/python3 -c '
import json, sys
for line in sys.stdin:
    i = json.loads(line)
    print(f"{i.get(\"file\",\"\").split(\"/\")[-1]:28} {i.get(\"modality\",\"\"):4} {i.get(\"rows\")}x{i.get(\"columns\")} "
          f"frames {i.get(\"frames\")} {i.get(\"photometric\",\"\"):14} {i.get(\"transfer_syntax\",{}).get(\"name\",\"\")}")'
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
/usr/bin/python3 - "$out/findings.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    for s in r["series"]:
        print(f"study {r['study'][-24:]}  series {s['series'][-20:]}  {s['modality']}")
        for ls in s.get("label_sets", []):
            top = sorted(ls["findings"], key=lambda f: -f["probability"])[:3]
            print(f"   {ls['name']:22} " + ", ".join(f"{f['label']} {f['probability']:.2f}" for f in top))
    if "sr" in r:
        print(f"   SR {r['sr'].get('file', '')}")
PY
echo
echo "demo: random weights — the probabilities above are meaningless. See README.md to use UniMed-CLIP's weights."
