"""What this process may use of its machine: memory and CPU cores, a container's limits included.

A Kubernetes pod sees the whole node in /proc/meminfo and os.cpu_count(); its own limits are in
its cgroup (v2), which both functions read, so a step sizes its buffers and worker processes for
the pod it runs in rather than for the node.
"""

from __future__ import annotations

import math
import os


def available_memory_bytes() -> int:
    """Memory this process can still use: MemAvailable, capped by a container's cgroup limit."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as limit_file, \
                open("/sys/fs/cgroup/memory.current", encoding="ascii") as current_file:
            limit = limit_file.read().strip()
            if limit != "max":
                available = min(available, int(limit) - int(current_file.read()))
    except (OSError, ValueError):
        pass
    return max(available, 0)


def available_cores() -> int:
    """CPU cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (rounded up)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as quota_file:
            quota, period = quota_file.read().split()
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(cores, 1)
