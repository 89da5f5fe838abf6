"""Operators' overrides: force-accept or force-reject an example by id, with who and why.

:mod:`~quality.overrides.record` is the record (one schema for the overrides file of
file mode and the control topic of stream mode) and its validation;
:mod:`~quality.overrides.book` applies overrides to the pipeline's decisions. Pure:
reading and writing the records is the drivers' job.
"""

from quality.overrides.book import OverrideBook
from quality.overrides.record import (ACTIONS, FORCE_ACCEPT, FORCE_REJECT, OVERRIDE_TYPE, Override, OverrideError,
                                      accepted_envelope, make_override, override_from_envelope, parse_override,
                                      valid_example)

__all__ = ["ACTIONS", "FORCE_ACCEPT", "FORCE_REJECT", "OVERRIDE_TYPE", "Override", "OverrideBook", "OverrideError",
           "accepted_envelope", "make_override", "override_from_envelope", "parse_override", "valid_example"]
