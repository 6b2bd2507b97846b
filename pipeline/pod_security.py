"""The settings that make a worker pod meet the Kubernetes "restricted" Pod Security Standard.

They are also what k8s/admission/worker-policies.yaml requires of every pod in the workers'
namespace, and what checkov checks (tests/test_security.py): no root, no privilege escalation,
no capabilities, the runtime's default seccomp profile, a read-only root filesystem with
writable scratch folders, no Kubernetes API token (workers never call the API), and an image
that is pulled again when it is named by a tag that may have moved.
"""

from __future__ import annotations

# The image's unprivileged user and group (docker/Dockerfile: USER 10001:10001).
IMAGE_USER_ID = 10001
# What a step writes outside its storage locations, on a read-only root filesystem:
# (volume name, mount path). /tmp holds temporary files and matplotlib's config; the home folder
# holds Keras' cache (HOME=/home/cnnpipe in the image).
SCRATCH_FOLDERS = (("tmp", "/tmp"), ("home", "/home/cnnpipe"))
DIGEST_MARK = "@sha256:"


def image_pull_policy(image: str) -> str:
    """IfNotPresent for an image named by digest (its content cannot change), else Always:
    a tag may have been moved to another build since a node pulled it."""
    return "IfNotPresent" if DIGEST_MARK in image else "Always"


def restricted_pod_settings(service_account: str) -> dict:
    """The pod-level fields: identity without a token, non-root, seccomp, scratch volumes."""
    return {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_USER_ID,
            "runAsGroup": IMAGE_USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [{"name": name, "emptyDir": {}} for name, _ in SCRATCH_FOLDERS],
    }


def restricted_container_settings(image: str) -> dict:
    """The container-level fields: pull policy, no escalation or capabilities, read-only root."""
    return {
        "imagePullPolicy": image_pull_policy(image),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": name, "mountPath": path} for name, path in SCRATCH_FOLDERS],
    }
