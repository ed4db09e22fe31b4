"""Registers the built-in restoration methods (imported by the package ``asirp``).

The registry (:mod:`asirp.registry`) imports no method; importing :mod:`asirp.methods` registers
every built-in one. The package imports this module right after the registry, before anything
that looks methods up, so ``import asirp.<anything>`` always finds them registered.
"""

import asirp.methods  # noqa: F401  (importing registers every built-in method)
