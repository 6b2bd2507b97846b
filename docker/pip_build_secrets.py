"""Write this machine's pip network settings as two build secrets for docker/Dockerfile.

Usage: python docker/pip_build_secrets.py DIR  ->  DIR/pip.conf and DIR/pip-ca.crt (mode 0600).

Only what reaches the package index is kept (index URLs, trusted hosts, proxy, timeouts and the
CA bundle, whose path becomes the secret's path inside the build); local wheel folders, file://
indexes and constraint files of this machine mean nothing inside the image and are dropped. The
files are mounted into a RUN step as BuildKit secrets, so no layer and no history entry holds
them; they may carry an index token, hence the mode.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

CA_INSIDE_BUILD = "/run/secrets/pip-ca.crt"
NETWORK_KEYS = ("index-url", "extra-index-url", "trusted-host", "proxy", "timeout", "default-timeout", "retries")


def pip_settings() -> dict[str, str]:
    """``pip config list`` as {key: value}: later scopes (environment) win, as in pip itself."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    settings = {}
    for line in listing.splitlines():
        name, _, quoted = line.partition("=")
        key = name.rpartition(".")[2]
        settings[key] = quoted.strip().strip("'\"")
    return settings


def reachable_urls(value: str) -> str:
    """Keep the http(s) URLs of a space-separated list (file:// and paths exist only on this machine)."""
    return " ".join(url for url in value.split() if url.startswith(("http://", "https://")))


def build_config(settings: dict[str, str], has_ca: bool) -> str:
    lines = ["[global]"]
    for key in NETWORK_KEYS:
        value = settings.get(key, "")
        if key.endswith("index-url"):
            value = reachable_urls(value)
        if value:
            lines.append(f"{key} = {value}")
    if has_ca:
        lines.append(f"cert = {CA_INSIDE_BUILD}")
    return "\n".join(lines) + "\n"


def write_private(path: str, text: str | None = None, copy_from: str | None = None) -> None:
    """Create ``path`` readable by its owner only, before anything is written into it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        if copy_from:
            with open(copy_from) as source:
                shutil.copyfileobj(source, handle)
        elif text:
            handle.write(text)


def main(directory: str) -> None:
    settings = pip_settings()
    ca_bundle = settings.get("cert", "")
    has_ca = bool(ca_bundle) and os.path.isfile(ca_bundle)
    write_private(os.path.join(directory, "pip-ca.crt"), copy_from=ca_bundle if has_ca else None)
    write_private(os.path.join(directory, "pip.conf"), build_config(settings, has_ca))


if __name__ == "__main__":
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: python docker/pip_build_secrets.py EXISTING_DIR")
    main(sys.argv[1])
