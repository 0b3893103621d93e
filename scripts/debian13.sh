#!/usr/bin/env bash
# Runs the README's test command (scripts/test.sh) inside a Debian 13
# "trixie" chroot, as a new user on Debian 13 would: a clone of this checkout's
# HEAD, ../shared beside it read-only when present.
#
#   scripts/debian13.sh [TEST.SH ARGS...]      e.g. scripts/debian13.sh -- -R plugin
#   scripts/debian13.sh --shell                a root shell in the prepared chroot
#   scripts/debian13.sh --run CMD [ARGS...]    a command in the clone, in the chroot
#
# The chroot lives outside the repo (UNIMED_TRIXIE_ROOT, default
# /var/cache/unimed/trixie) and is reused when present; made from nothing it
# is `debootstrap --variant=minbase trixie` plus git and ca-certificates
# (debootstrap, Debian's package, is installed when missing). Run as root.
# The mounts it makes (/proc, /sys, /dev, /dev/pts, /dev/shm, ../shared) are undone on every exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
root=${UNIMED_TRIXIE_ROOT:-/var/cache/unimed/trixie}
mirror=${UNIMED_TRIXIE_MIRROR:-http://deb.debian.org/debian}
work=/work          # in the chroot: $work/unimed (the clone) and $work/shared
started=$(date +%s)
stamp() { echo "debian13: $* (+$(( $(date +%s) - started )) s)"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "debian13: needs root (debootstrap, mount, chroot)" >&2
  exit 1
fi

# One run at a time: a second one would check out another commit under the
# first one's build.
mkdir -p "$(dirname "$root")"
exec 9>"$root.lock"
if ! flock -n 9; then
  stamp "waiting for another scripts/debian13.sh to finish"
  flock 9
fi

# ---- the chroot: reuse, or make it from nothing ----
if [ ! -x "$root/usr/bin/git" ] || [ ! -f "$root/etc/os-release" ]; then
  if ! command -v debootstrap >/dev/null; then
    stamp "installing debootstrap"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
  fi
  stamp "debootstrap trixie into $root"
  # Into a side folder first, so an interrupted run never leaves a half-made
  # chroot that the next run would take for a finished one.
  rm -rf "$root.partial"
  mkdir -p "$(dirname "$root")"
  debootstrap --variant=minbase --include=git,ca-certificates trixie "$root.partial" "$mirror" \
    > "$(dirname "$root")/debootstrap.log" 2>&1 || {
      echo "debian13: debootstrap failed; its log:" >&2
      tail -20 "$(dirname "$root")/debootstrap.log" >&2
      exit 1
    }
  rm -rf "$root"
  mv "$root.partial" "$root"
  stamp "chroot made"
else
  stamp "reusing $root ($(. "$root/etc/os-release" && echo "$PRETTY_NAME"))"
fi

# ---- mounts, undone on every exit ----
mounted=()
cleanup() {
  local i
  for (( i=${#mounted[@]}-1; i>=0; i-- )); do
    umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" 2>/dev/null ||
      echo "debian13: could not unmount ${mounted[$i]}" >&2
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mount_in() { # mount_in TARGET MOUNT-ARGS...
  local target="$root$1"; shift
  mkdir -p "$target"
  if mountpoint -q "$target"; then umount -l "$target"; fi # left over by a killed run
  mount "$@" "$target"
  mounted+=("$target")
}
mount_in /proc -t proc proc
mount_in /sys -t sysfs sysfs
mount_in /dev --bind /dev
mount_in /dev/pts -t devpts -o newinstance,ptmxmode=0666 devpts
mount_in /dev/shm -t tmpfs -o mode=1777 tmpfs
shared=$(cd .. && pwd)/shared
if [ -d "$shared" ]; then
  mount_in "$work/shared" --bind "$shared"
  mount -o remount,bind,ro "$root$work/shared"
fi

# Name resolution as on the host; the host's own CA certificates too (TLS to
# the npm registry may be intercepted by a proxy the host trusts).
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
if [ -d /usr/local/share/ca-certificates ] &&
   [ -n "$(ls -A /usr/local/share/ca-certificates 2>/dev/null)" ]; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp -rL /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null 2>&1 || true
fi
# Packages install without starting their services (Orthanc's), as in any chroot.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

# ---- the clone: HEAD of this checkout; build/ and node_modules/ kept when reused ----
clone="$root$work/unimed"
head=$(git rev-parse HEAD)
if [ -d "$clone/.git" ]; then
  git -C "$clone" fetch -q "$repo" "$head"
  git -C "$clone" -c advice.detachedHead=false checkout -q -f "$head"
  git -C "$clone" clean -q -fd
else
  rm -rf "$clone"
  git clone -q --no-checkout "$repo" "$clone"
  git -C "$clone" -c advice.detachedHead=false checkout -q "$head"
fi
stamp "clone at $(git -C "$clone" log -1 --format='%h %s' | cut -c1-70)"

in_chroot() {
  chroot "$root" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    ${OPENBLAS_CORETYPE:+OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE} \
    ${OPENBLAS_L2_SIZE:+OPENBLAS_L2_SIZE=$OPENBLAS_L2_SIZE} \
    ${CI:+CI=$CI} "$@"
}
rc=0
case "${1:-}" in
  --shell) in_chroot /bin/bash -c "cd $work/unimed && exec bash -i" || rc=$? ;;
  --run) shift; in_chroot /bin/bash -c 'cd "$0" && exec "$@"' "$work/unimed" "$@" || rc=$? ;;
  *) in_chroot "$work/unimed/scripts/test.sh" "$@" || rc=$? ;;
esac
stamp "done, exit $rc"
exit $rc
