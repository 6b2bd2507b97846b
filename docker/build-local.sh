#!/usr/bin/env bash
# Build the project image on a machine with a Docker engine and no container registry:
# the Debian base (docker/local-base.sh, once), then docker/Dockerfile on it with BuildKit,
# host networking for pip, and this machine's pip settings as build secrets (in no layer).
# Usage: docker/build-local.sh [IMAGE]   (default cnnpipe:local; BASE_IMAGE, PYTHON may be set)
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-cnnpipe:local}
base=${BASE_IMAGE:-cnnpipe-base:bookworm}
python=${PYTHON:-python3}

# A client that builds with BuildKit (secrets need it): a Docker CLI with the buildx plugin, or
# a CLI older than 23, which carries BuildKit itself (Debian bookworm's docker.io is 20.10).
buildkit_client() {
    local candidate major
    for candidate in $(type -ap docker); do
        if "$candidate" buildx version > /dev/null 2>&1; then echo "$candidate"; return; fi
        major=$("$candidate" version --format '{{.Client.Version}}' 2> /dev/null | cut -d. -f1)
        if [ -n "$major" ] && [ "$major" -lt 23 ]; then echo "$candidate"; return; fi
    done
    echo "error: no Docker CLI here builds with BuildKit; install docker-buildx or Debian's docker.io" >&2
    return 1
}
docker=$(buildkit_client)

DOCKER=$docker docker/local-base.sh "$base"
secrets=$(mktemp -d)
trap 'rm -rf "$secrets"' EXIT
"$python" docker/pip_build_secrets.py "$secrets"
DOCKER_BUILDKIT=1 "$docker" build --network host --progress plain \
    --build-arg BASE_IMAGE="$base" --build-arg TF_LOG_LEVEL=3 \
    --secret id=pip.conf,src="$secrets/pip.conf" --secret id=pip-ca.crt,src="$secrets/pip-ca.crt" \
    -f docker/Dockerfile -t "$image" .
