"""A remote worker's findings report as msgspec types: decoded and checked in one pass of C code.

The types accept what the route's checks accept (``Finding(**item)``'s: known fields only, ``rule_id``
and ``title`` strings, a known severity and confidence) with the other fields in the shapes findings
have them (model.FindingStruct), and nothing else in the body; whatever they refuse goes the slow
way (:func:`read_json`, then the checks one by one), which gives the answer and its errors.
"""
from __future__ import annotations

from typing import Any

import msgspec

from appliance.api.envelope import check_depth
from appliance.scanning.model import FindingStruct

WireFinding = FindingStruct  # Finding's fields in Finding's order, as the worker sends them (vars)


class FindingsReport(msgspec.Struct, forbid_unknown_fields=True):
    findings: list[WireFinding]  # type: ignore[valid-type]  # a Struct made from Finding's fields
    # The envelope's fields are the route's to check, as on the slow way: any JSON here.
    scanId: Any = None
    leaseId: Any = None
    firstSeq: Any = None

    def envelope(self) -> dict[str, Any]:
        """The report's other fields, as the slow way's body holds them."""
        return {"scanId": self.scanId, "leaseId": self.leaseId, "firstSeq": self.firstSeq}


DECODER = msgspec.json.Decoder(FindingsReport)
# The levels the types fix: the body (0), its findings list (1), a finding (2), a finding's fields (3).
FIELD_DEPTH = 3


def checked_findings(report: FindingsReport) -> list[Any]:
    """The decoded findings (each a Struct of :class:`Finding`'s fields, in its order: what
    :func:`~appliance.scanning.model.finding_values` reads), after the depth check of their raw
    data, the one field whose type lets it nest (model.FindingStruct)."""
    findings: list[Any] = report.findings
    check_depth([finding.raw for finding in findings if type(finding.raw) in _CONTAINERS], FIELD_DEPTH)
    return findings


_CONTAINERS = (dict, list)
