#!/usr/bin/env bash
# Make a plain Debian bookworm image with Python 3.11 (python3-venv, pip, CA certificates) and
# `docker import` it as the base of `make image-local`, on a machine where no container registry
# is reachable. Usage: docker/local-base.sh IMAGE_NAME   (needs root, debootstrap and a Docker engine)
#
# The Debian mirror is the one this machine's apt already uses (read from `apt-cache policy`, or
# MIRROR=... to choose); it is never written into the repository or the image's metadata.
set -euo pipefail
image=${1:?usage: docker/local-base.sh IMAGE_NAME}
docker=${DOCKER:-docker}

if "$docker" image inspect "$image" > /dev/null 2>&1; then
    echo "base image $image exists; remove it (docker rmi $image) to rebuild it"
    exit 0
fi
mirror=${MIRROR:-$(apt-cache policy | awk '$3 ~ /^bookworm\/main$/ && $2 ~ /^https?:\/\// {print $2; exit}')}
if [ -z "$mirror" ]; then
    echo "error: no Debian bookworm mirror in this machine's apt sources; set MIRROR=http://..." >&2
    exit 2
fi
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" "$mirror" > "$rootfs.log" 2>&1 || { cat "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
# Nothing of the build machine stays in the image: apt's lists and caches name the mirror.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
echo "deb http://deb.debian.org/debian bookworm main" > "$rootfs/etc/apt/sources.list"
tar -C "$rootfs" -c . | "$docker" import \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$image" > /dev/null
echo "built base image $image"
