"""The labels devbox puts on what it makes on an engine (containers, images, volumes, networks,
services, secrets): how it finds its own objects again, and whose they are."""

from __future__ import annotations

LABEL_PREFIX = "devbox."
OWNER_LABEL = f"{LABEL_PREFIX}owner"  # the id of the spec that made it (kept in its state folder)
OWNER_FOLDER_LABEL = f"{LABEL_PREFIX}owner-folder"  # that spec's folder, to name it in refusals
HELPER_LABEL = f"{LABEL_PREFIX}helper"  # a short-lived helper container: what it does (backup, changes)
# on the container of a host with gpu_share: true: it may use GPUs others hold, and holds none
GPU_SHARE_LABEL = f"{LABEL_PREFIX}gpu-share"
