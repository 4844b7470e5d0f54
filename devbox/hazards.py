"""Bind mounts that hand the machine over: the checks behind `render`'s and `up`'s warnings.

A host's users are not root on the machine unless the spec lets them be. `docker_socket: true`
and `privileged: true` are named opt-ins; a bind mount of the Docker socket, of `/`, `/etc` or
`/proc` opens the same door with no name, so every such mount is said out loud. Pure: it looks
at the spec's (already resolved) paths, never at the file system.
"""

from __future__ import annotations

import posixpath

from devbox.spec import Host, Spec, Volume

# Sockets of container engines: whoever reaches one starts a privileged container.
ENGINE_SOCKETS = frozenset({
    "docker.sock", "containerd.sock", "podman.sock", "crio.sock", "buildkitd.sock", "dockershim.sock",
})  # fmt: skip

# Mounting one of these, anything in it or any folder above it gives the machine away, read-only
# or not: /etc and /root hold password hashes and keys, /run and /var/run the engine's socket,
# /proc, /sys and /dev the kernel and the devices, /var/lib/docker every container's files.
MACHINE_PATHS = {
    "/": "the machine's whole file system",
    "/etc": "the machine's configuration, password hashes and keys",
    "/root": "root's home, keys and credentials",
    "/boot": "the kernel and boot loader",
    "/proc": "the kernel's view of every process",
    "/sys": "the kernel's settings and devices",
    "/dev": "the machine's devices",
    "/run": "the machine's sockets (the Docker socket among them)",
    "/var/run": "the machine's sockets (the Docker socket among them)",
    "/var/lib/docker": "every container's files and the engine's state",
    "/var/lib/containerd": "every container's files",
    "/var/lib/kubelet": "the kubelet's credentials",
}

# Writable, these let the host's users replace programs or jobs root runs; read-only they are fine.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/var")

# Read-only mounts of these are common and give nothing away.
HARMLESS_READ_ONLY = frozenset({"/etc/localtime", "/etc/timezone"})


def _within(path: str, folder: str) -> bool:
    return folder == "/" or path == folder or path.startswith(folder + "/")


def mount_hazard(volume: Volume) -> str | None:
    """What a bind mount gives the host's users of the machine, or None when it is harmless."""
    if volume.kind != "bind":
        return None
    source = posixpath.normpath(volume.source)
    if posixpath.basename(source) in ENGINE_SOCKETS:
        return "a container engine's socket, which is root on this machine"
    if volume.read_only and source in HARMLESS_READ_ONLY:
        return None
    for folder, holds in MACHINE_PATHS.items():
        if source == folder:
            return f"{folder}: {holds}"
        if folder != "/" and _within(source, folder):
            return f"part of {folder}: {holds}"
        if _within(folder, source):
            return f"{folder} within it: {holds}"
    for folder in SYSTEM_PATHS:
        if not volume.read_only and _within(source, folder):
            return f"write access to {folder}: programs and jobs the machine's root runs (mount it :ro)"
    return None


def mount_warnings(host: Host) -> list[str]:
    """One warning per bind mount of ``host`` that gives the machine away."""
    return [
        f"hosts.{host.name}.volumes: {volume.source}:{volume.target} gives the host's users {hazard}"
        for volume in host.volumes
        if (hazard := mount_hazard(volume))
    ]


def opt_in_warnings(spec: Spec) -> list[str]:
    """What the spec opens up that its users should hear about every time it is used: mounts
    that give the machine away, the engine's socket, privileged containers."""
    warnings = []
    for host in spec.hosts:
        warnings += mount_warnings(host)
        if host.docker_socket:
            warnings.append(f"hosts.{host.name}.docker_socket: the host's users get the Docker "
                            "socket, which is root on this machine")  # fmt: skip
        if host.privileged:
            warnings.append(f"hosts.{host.name}.privileged: the container can do anything the "
                            "machine's root can")  # fmt: skip
    return warnings
