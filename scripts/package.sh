#!/usr/bin/env bash
# Builds the Debian package unimed-orthanc_<version>_<arch>.deb in build-deb/
# (CPack, cmake/Packaging.cmake): the plugin, /etc/orthanc/unimed.json (a
# conffile pointing at the demo model), the label sets, the demo model and
# the unimed commands, installed under /usr.
#
#   scripts/package.sh [--no-setup] [BUILD_DIR]     (default build-deb)
#
# Prints the path of the .deb on its last line. Install it with
#   sudo apt-get install ./build-deb/unimed-orthanc_<version>_amd64.deb
set -euo pipefail
cd "$(dirname "$0")/.."
setup=1
build=build-deb
while [ $# -gt 0 ]; do
  case "$1" in
    --no-setup) setup=0; shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "package.sh: unknown option $1" >&2; exit 2 ;;
    *) build="$1"; shift ;;
  esac
done
[ "$setup" = 1 ] && scripts/setup.sh --no-npm
# CPack computes Depends with dpkg-shlibdeps (dpkg-dev) on the files that
# `file` says are ELF objects; a minimal Debian has neither.
missing=()
for p in dpkg-dev file; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "package.sh: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
  -DUNIMED_LABELSET_DIR=/usr/share/unimed/labelsets -DUNIMED_PACKAGE=ON -DBUILD_TESTING=OFF >/dev/null
cmake --build "$build" -j"$(nproc)"
rm -f "$build"/unimed-orthanc_*.deb
(cd "$build" && cpack -G DEB >/dev/null)
deb=$(ls "$build"/unimed-orthanc_*.deb)
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
dpkg-deb --contents "$deb" | awk '{print $6}'
echo "$deb"
