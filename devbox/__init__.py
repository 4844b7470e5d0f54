"""devbox: isolated, SSH-able development hosts on one GPU server, from a short spec."""

__version__ = "0.1.0"
