"""The devbox spec: load ``devbox.yaml``, validate it in one place, return frozen dataclasses.

Layout: ``model`` (the dataclasses), ``options`` (reusable option types: a size, a port, a list
of ...), ``values`` (devbox's own option types: a volume, a GPU request, ...), ``host_model``
(``Host``, each of its settings declared once on it, and ``Spec``), ``fields`` (every setting as
a table, a host's derived from ``Host``), ``parse`` (safe YAML), ``hosts`` (a host over ``defaults``),
``rules`` (rules across hosts), ``load`` (``load_spec``/``build_spec``) and ``schema``
(the JSON Schema generated from the table). Pure: nothing here talks to Docker.
"""

from devbox.spec.fields import (
    DEFAULTS,
    ENGINES,
    HOST,
    HOST_ONLY,
    HOST_SETTINGS,
    IMAGE_KEYS,
    NETWORK_KEYS,
    RESOURCE_KEYS,
    TOP_KEYS,
    allowed_keys,
)
from devbox.spec.host_model import CAPABILITIES, GPU_CAPABILITIES, ULIMIT_NAMES, Host, Spec
from devbox.spec.load import build_spec, load_spec
from devbox.spec.model import (
    DEFAULT_BASE_IMAGE,
    DEFAULT_PACKAGES,
    DEFAULT_SHM_SIZE,
    THREAD_VARIABLES,
    Gpus,
    Image,
    Network,
    Resources,
    Size,
    Ulimit,
    Volume,
)
from devbox.spec.options import SIZE_HELP
from devbox.spec.parse import MAX_YAML_NODES, parse_yaml
from devbox.spec.values import MIN_MEMORY_LIMIT, RESTART_POLICIES

__all__ = [
    "CAPABILITIES", "DEFAULT_BASE_IMAGE", "DEFAULT_PACKAGES", "DEFAULT_SHM_SIZE", "DEFAULTS", "ENGINES",
    "GPU_CAPABILITIES", "HOST", "HOST_ONLY", "HOST_SETTINGS", "IMAGE_KEYS", "MAX_YAML_NODES", "MIN_MEMORY_LIMIT",
    "NETWORK_KEYS", "RESOURCE_KEYS", "RESTART_POLICIES", "SIZE_HELP", "THREAD_VARIABLES", "TOP_KEYS",
    "ULIMIT_NAMES", "Gpus", "Host", "Image", "Network", "Resources", "Size", "Spec", "Ulimit", "Volume",
    "allowed_keys", "build_spec", "load_spec", "parse_yaml",
]  # fmt: skip
