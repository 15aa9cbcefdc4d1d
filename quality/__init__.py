"""Data quality: the gate every incoming row passes before it becomes a license.

Today the gate checks rows against the catalogue's rules (holder identifiers by kind, required
fields, dates and their order); Great Expectations suites and supervision cards build on it.
"""

from quality.gate import GateResult, RowGate

__all__ = ["GateResult", "RowGate"]
