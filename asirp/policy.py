"""The policy file, under the name the README documents (``asirp.policy.Policy``).

It lives in :mod:`asirp.selection.policy`; this module only re-exports it.
"""

from asirp.selection.policy import (
    MODALITIES,
    POLICY_FORMAT,
    POLICY_VERSION,
    Policy,
    PolicyEntry,
    default_policy_path,
    is_policy_data,
)

__all__ = [
    "MODALITIES",
    "POLICY_FORMAT",
    "POLICY_VERSION",
    "Policy",
    "PolicyEntry",
    "default_policy_path",
    "is_policy_data",
]
