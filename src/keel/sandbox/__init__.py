"""Sandboxed code execution: run untrusted code in a fresh, isolated, size-limited sandbox.

``BubblewrapSandbox`` is the local Linux backend; ``WarmPool`` keeps started sandboxes ready so
a run does not wait for one to start. Both follow the ``Sandbox`` protocol in ``base``.
"""

from keel.sandbox.base import EXIT_CODES, Limit, Limits, Result, Runtime, Sandbox, Usage
from keel.sandbox.bwrap import BubblewrapSandbox
from keel.sandbox.pool import WarmPool

__all__ = [
    "EXIT_CODES",
    "BubblewrapSandbox",
    "Limit",
    "Limits",
    "Result",
    "Runtime",
    "Sandbox",
    "Usage",
    "WarmPool",
]
