#!/usr/bin/env bash
# Installs what UniMed for Orthanc needs on Debian 12 (bookworm) or Debian 13
# (trixie): build tools, libraries, Orthanc, and the Python/Node tools the
# tests use. Package names that differ between the releases are picked from
# /etc/os-release. Idempotent: apt-get runs
# only when a package is missing. Run as root (or with sudo available).
#
#   scripts/setup.sh            everything (build, run, and test)
#   scripts/setup.sh --no-npm   without the npm packages only the tests use
set -euo pipefail
cd "$(dirname "$0")/.."
with_npm=1
[ "${1:-}" = "--no-npm" ] && with_npm=0

# The clang runtime (sanitizers, libFuzzer) is named after clang's version.
# DCMTK 3.6.9's CMake files (Debian 13) name libtiff.so and libjpeg.so in
# dcmimage's link interface, but libdcmtk-dev does not bring them.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
release_packages=()
case "$codename" in
  bookworm) clang_rt=libclang-rt-14-dev ;;
  trixie) clang_rt=libclang-rt-19-dev; release_packages=(libtiff-dev libjpeg-dev) ;;
  *) clang_rt=libclang-rt-dev
     echo "setup: release '$codename' not tested (Debian 12 and 13 are); trying $clang_rt" >&2 ;;
esac

PACKAGES=(
  # build
  build-essential cmake pkg-config clang "$clang_rt" "${release_packages[@]}"
  # libraries
  libopenblas-dev libcjson-dev libdcmtk-dev dcmtk libopenjp2-7-dev libxml2-dev libxml2-utils libzip-dev libpng-dev
  libcurl4-openssl-dev zlib1g-dev
  # data-parallel training (unimed-train over mpirun) and its test trainer_mpi
  libopenmpi-dev openmpi-bin
  # Orthanc and DICOM tools
  orthanc orthanc-dev dicom3tools
  # the cluster test (tests/cluster/): Orthanc's PostgreSQL index plugin and
  # PostgreSQL's server programs (initdb, pg_ctl; PostgreSQL 15 on Debian 12,
  # 17 on Debian 13: same package names). The test creates its own database
  # server in a temporary folder; the system's PostgreSQL service is not used.
  orthanc-postgresql postgresql
  # GNU time: the decode-budget tests read a process's peak RSS from "time -v"
  time
  # references for the tests (Debian's /usr/bin/python3)
  python3 python3-torch python3-numpy python3-pydicom python3-pil python3-gdcm
  # bench/run.py: builds the ONNX Runtime INT8 model from the exported ONNX
  python3-onnx
  # tokenizer parity (HuggingFace's JavaScript tokenizer from npm) and the
  # Orthanc Explorer test (Debian's Chromium driven by playwright-core)
  nodejs npm chromium
)

missing=()
for p in "${PACKAGES[@]}"; do
  # Node may come from elsewhere on this machine; any working node/npm will do.
  if [[ "$p" == nodejs || "$p" == npm ]] && command -v "${p/nodejs/node}" >/dev/null; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm packages the tests use, pinned by their lock files: HuggingFace's
# tokenizer (the reference token ids every parity test starts from) and
# playwright-core (the Orthanc Explorer test). Without them most of the suite
# cannot run, so a failure stops here with the reason. Installed again when the
# lock file is newer than the install (a pin changed); --engine-strict refuses
# a pin this machine's Node.js cannot run.
for dir in tests/tokenizer tests/plugin; do
  if [ "$with_npm" = 1 ] && { [ ! -f "$dir/node_modules/.package-lock.json" ] ||
                              [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; }; then
    if ! (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --engine-strict --loglevel=error); then
      echo "setup: 'npm ci' failed in $dir: the npm registry must be reachable for the tests" \
           "(and Node.js $(node --version 2>/dev/null) new enough for the pinned packages)" >&2
      exit 1
    fi
  fi
done
echo "setup: done"
