#!/usr/bin/env bash
# The main job: UniMed-CLIP inside a real Orthanc, fed over DICOM like a PACS.
#
# Installs what it needs (scripts/setup.sh), builds the plugin and the
# `unimed` command into build/, makes the sample studies
# (samples/make_samples.py + the DICOM files of Debian's python3-pydicom),
# starts Debian's Orthanc with the plugin on this machine (HTTP 8042 and
# DICOM 4242, or free ports when those are taken), sends the studies to it
# with storescu (C-STORE, as a modality does), waits until the plugin has
# analysed each one, prints the findings and where to see them, and keeps
# Orthanc running until Ctrl-C. Without a terminal, or with --no-wait, it
# stops Orthanc and exits after the table (exit 1 if a study has no findings).
#
# Model: samples/demo-model (small, trained on MedMNIST thumbnails; see its
# README) if present, else a RANDOM-weight model (meaningless scores). When
# the model directory has a model card (model-card.json), only the label sets
# it lists are applied, and the table says which questions the model answers.
#
#   scripts/demo.sh [--model DIR] [--label-set FILE]... [--no-wait]
#                   [--http-port N] [--dicom-port N] [--build-dir DIR] [--no-build] [--out DIR]
#
#   --model DIR        another model directory (e.g. the converted UniMed-CLIP
#                      weights); scored against the label sets of its model card,
#                      or the shipped label sets when it has none
#   --label-set FILE   score against these label sets instead (repeatable)
#   --http-port N, --dicom-port N   ports to try first (default 8042, 4242; 0 = any free)
#   --no-wait          exit after the table (also when stdin is not a terminal)
#   --build-dir DIR    build folder (default build)
#   --no-build         skip setup and build; use the binaries in the build folder
#   --out DIR          work folder (default BUILD_DIR/demo)
#
# Orthanc's storage is build/demo/orthanc/ (emptied at each run); its log is
# build/demo/orthanc/orthanc.log.
set -euo pipefail
cd "$(dirname "$0")/.."

model=""
labelsets=()
no_wait=0
http_port=8042
dicom_port=4242
build=build
do_build=1
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --label-set) labelsets+=("$2"); shift 2 ;;
    --no-wait) no_wait=1; shift ;;
    --http-port) http_port="$2"; shift 2 ;;
    --dicom-port) dicom_port="$2"; shift 2 ;;
    --build-dir) build="$2"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -t 0 ] || no_wait=1

say() { printf '\n== %s\n' "$*"; }

if [ "$do_build" = 1 ]; then
  say "setup (scripts/setup.sh: Debian packages, once)"
  scripts/setup.sh --no-npm
  # curl for the REST examples printed at the end (not in a minimal Debian).
  if ! command -v curl >/dev/null; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends curl
  fi
  say "build ($build/: the plugin and the unimed command)"
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" -j"$(nproc)" --target OrthancUniMed unimed
fi
plugin=$build/plugin/libOrthancUniMed.so
unimed=$build/tools/unimed
for f in "$plugin" "$unimed"; do
  [ -f "$f" ] || { echo "demo.sh: $f is missing (build first, or drop --no-build)" >&2; exit 1; }
done
for cmd in /usr/sbin/Orthanc storescu; do
  command -v "$cmd" >/dev/null || { echo "demo.sh: $cmd not found (run scripts/setup.sh)" >&2; exit 1; }
done

[ -n "$out" ] || out=$build/demo
mkdir -p "$out"

# ---- the model --------------------------------------------------------------
warning=""
answers=""
answered_modalities=""
if [ -n "$model" ]; then
  model_note="your model $model"
elif [ -f samples/demo-model/model.safetensors ]; then
  model=samples/demo-model
  model_note="the demo model (samples/demo-model: 0.9 M parameters trained on 28-pixel MedMNIST images; its model card says what it answers; NOT for clinical use)"
  warning="The demo model was trained on 28-pixel thumbnails; its scores on these synthetic pictures are illustrations only."
else
  model=$out/random-model
  if [ ! -f "$model/model.safetensors" ]; then
    say "making a RANDOM-weight model in $model (samples/demo-model is not there)"
    /usr/bin/python3 tests/tokenizer/make_vocab.py --size 3000 --layout bert --out "$out/random-vocab.txt"
    /usr/bin/python3 tests/reference/make_model.py --config small --seed 0 \
      --vocab "$out/random-vocab.txt" --out "$model"
  fi
  model_note="a RANDOM-weight model ($model, made by tests/reference/make_model.py)"
  warning="RANDOM WEIGHTS: every probability below is meaningless. It shows the plumbing only; see README.md for the real UniMed-CLIP weights."
fi
# A model card (model-card.json, see samples/demo-model/README.md) lists the
# label sets the model was validated with: without --label-set the demo asks
# only those questions, so no study gets an answer the model was not trained for.
if [ ${#labelsets[@]} -eq 0 ] && [ -f "$model/model-card.json" ]; then
  mapfile -t labelsets < <(/usr/bin/python3 scripts/demo_report.py card-label-sets "$model")
  { read -r answers; read -r answered_modalities; } < <(/usr/bin/python3 scripts/demo_report.py card-summary "$model")
elif [ ${#labelsets[@]} -eq 0 ] && [ "$model" = samples/demo-model ]; then
  labelsets=(samples/demo-model/labelsets/*.json)   # a demo model without its card
fi
say "model: $model_note"
"$unimed" info --model "$model" | /usr/bin/python3 scripts/demo_report.py info

# ---- the sample studies -----------------------------------------------------
say "sample studies ($out/samples/)"
rm -rf "$out/samples"
/usr/bin/python3 samples/make_samples.py "$out/samples" >/dev/null
# DICOM files that Debian's python3-pydicom installs (each its own study).
pydicom_files=/usr/lib/python3/dist-packages/pydicom/data/test_files
for f in CT_small.dcm MR_small.dcm JPEG2000.dcm SC_rgb_jpeg_gdcm.dcm; do
  if [ -f "$pydicom_files/$f" ]; then
    mkdir -p "$out/samples/pydicom-${f%.dcm}"
    cp "$pydicom_files/$f" "$out/samples/pydicom-${f%.dcm}/"
  fi
done

# ---- Orthanc, C-STORE, findings ---------------------------------------------
args=(serve --plugin "$plugin" --model "$model" --workdir "$out/orthanc"
      --http-port "$http_port" --dicom-port "$dicom_port" --samples "$out/samples")
for l in "${labelsets[@]}"; do args+=(--label-set "$l"); done
[ "$no_wait" = 1 ] && args+=(--no-wait)
[ -n "$warning" ] && args+=(--warning "$warning")
[ -n "$answers" ] && args+=(--answers "$answers" --modalities "$answered_modalities")
exec /usr/bin/python3 scripts/demo_report.py "${args[@]}"
