#!/usr/bin/env bash
# Build the base kernel image `kernelhub/python:3.11` without a registry: a Debian bookworm
# minbase root filesystem with python3 (debootstrap), imported with the kernelspec labels
# the agent reads and a `work` user (uid/gid 1000) that kernels run as.
#
# Idempotent: nothing happens when the image exists (KH_IMAGE_REBUILD=1 forces a build); the
# root filesystem tarball is cached (KH_IMAGE_CACHE, default ~/.cache/kernelhub) so a rebuild
# after `docker rmi` or on a fresh data root takes seconds, not the debootstrap's minute.
set -euo pipefail

IMAGE=${KH_IMAGE:-kernelhub/python:3.11}
SUITE=${KH_IMAGE_SUITE:-bookworm}
MIRROR=${KH_IMAGE_MIRROR:-http://deb.debian.org/debian}
CACHE=${KH_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kernelhub}
ROOTFS_TAR="$CACHE/rootfs-$SUITE-python3.tar"
WORK_UID=1000

if [ "${KH_IMAGE_REBUILD:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "build-image: $IMAGE exists"
  exit 0
fi

if [ ! -s "$ROOTFS_TAR" ]; then
  command -v debootstrap >/dev/null || { echo "build-image: debootstrap is not installed" >&2; exit 1; }
  mkdir -p "$CACHE"
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  echo "build-image: debootstrap $SUITE into $root (about a minute)"
  debootstrap --variant=minbase --include=python3 "$SUITE" "$root" "$MIRROR" >/dev/null
  # the user kernels run as; its home is the bind-mounted work dir
  chroot "$root" groupadd --gid "$WORK_UID" work
  chroot "$root" useradd --uid "$WORK_UID" --gid "$WORK_UID" --home-dir /home/work \
    --no-create-home --shell /bin/bash work
  mkdir -p "$root/home/work" "$root/home/config" "$root/opt/kernelhub"
  # `python` answers as in Backend.AI's python images (`--exec 'python main.py'`)
  ln -s python3 "$root/usr/bin/python"
  chown "$WORK_UID:$WORK_UID" "$root/home/work"
  # what an image needs no more of once built: package lists, caches, docs
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar -C "$root" -cf "$ROOTFS_TAR.part" .
  mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
fi

# a tarball cached before `python` was linked gets the link appended (seconds, no debootstrap);
# grep reads the whole listing (not -q: under pipefail, tar killed by SIGPIPE after an early
# match failed the test, and a fresh tarball got a second ./usr/bin/python docker refuses)
if ! tar -tf "$ROOTFS_TAR" | grep -x './usr/bin/python' >/dev/null; then
  link=$(mktemp -d)
  mkdir -p "$link/usr/bin"
  ln -s python3 "$link/usr/bin/python"
  cp "$ROOTFS_TAR" "$ROOTFS_TAR.part"
  tar -C "$link" --owner=0 --group=0 -rf "$ROOTFS_TAR.part" ./usr/bin/python
  mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
  rm -rf "$link"
  echo "build-image: linked python -> python3 in $ROOTFS_TAR"
fi

# the labels of kernelhub/bootstrap.py's BASE_IMAGE_LABELS (the image catalogue's entry)
labels=(
  "ai.backend.kernelspec=1"
  "ai.backend.features=batch query uid-match"
  "ai.backend.base-distro=debian12"
  "ai.backend.runtime-type=python"
  "ai.backend.runtime-path=/usr/bin/python3"
  "ai.backend.role=COMPUTE"
  "ai.backend.resource.min.cpu=1"
  "ai.backend.resource.min.mem=256m"
  "ai.backend.service-ports="
)
changes=(--change "USER work" --change "WORKDIR /home/work" --change "ENV HOME=/home/work"
         --change 'CMD ["/bin/bash"]')
for label in "${labels[@]}"; do
  changes+=(--change "LABEL ${label%%=*}=\"${label#*=}\"")
done
docker import "${changes[@]}" "$ROOTFS_TAR" "$IMAGE" >/dev/null
echo "build-image: imported $IMAGE"
