"""devbox's tests: tests/unit, tests/tools and tests/e2e (see tests/conftest.py)."""
