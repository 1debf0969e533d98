"""Tests that show bugs found at the end of a session and not fixed yet.

Each is marked xfail(strict=True) by ``tests/conftest.py``: it fails the suite as soon as the
bug is fixed (so the entry must be removed), and it keeps the bug visible until then.
None is known now.
"""

KNOWN_BUGS: dict[str, str] = {}
