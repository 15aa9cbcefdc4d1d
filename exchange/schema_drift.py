"""Schema drift: how the columns a source delivers differ from the schema the exchange accepted.

Each source has a policy (``schema_policy`` in sources.yaml) for a run whose columns were added,
removed or retyped since the last accepted run:

- ``evolve`` (default): land and load it; the drift is recorded on the run;
- ``freeze``: fail the run before anything is landed, with the diff (a broken data contract);
- ``quarantine``: land it, but hold every row in the quarantine for review.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

__all__ = ["SchemaDrift", "SchemaDriftError", "compare_schemas", "schema_fields"]


class SchemaDriftError(ValueError):
    """A source under the ``freeze`` policy delivered different columns."""


def schema_fields(schema: pa.Schema) -> list[dict[str, str]]:
    """A schema as JSON: ``[{"name": ..., "type": ...}]`` (the form manifests and runs keep)."""
    return [{"name": f.name, "type": str(f.type)} for f in schema]


@dataclass(frozen=True)
class SchemaDrift:
    """Columns added, removed and retyped (name -> type, or name -> (old, new))."""

    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    retyped: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.retyped)

    def describe(self) -> str:
        """``added x (string); removed y (int64); retyped z int64 -> string``."""
        parts = []
        if self.added:
            parts.append("added " + ", ".join(f"{n} ({t})" for n, t in self.added.items()))
        if self.removed:
            parts.append("removed " + ", ".join(f"{n} ({t})" for n, t in self.removed.items()))
        if self.retyped:
            parts.append(
                "retyped " + ", ".join(f"{n} {a} -> {b}" for n, (a, b) in self.retyped.items())
            )
        return "; ".join(parts) or "no change"

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "retyped": {name: list(types) for name, types in self.retyped.items()},
        }


def compare_schemas(
    accepted: list[dict[str, str]] | None, current: pa.Schema | list[dict[str, str]]
) -> SchemaDrift:
    """The drift from the accepted schema to ``current`` (none when nothing was accepted yet)."""
    if not accepted:
        return SchemaDrift()
    fields = schema_fields(current) if isinstance(current, pa.Schema) else current
    before = {f["name"]: f["type"] for f in accepted}
    after = {f["name"]: f["type"] for f in fields}
    return SchemaDrift(
        added={n: t for n, t in after.items() if n not in before},
        removed={n: t for n, t in before.items() if n not in after},
        retyped={n: (before[n], t) for n, t in after.items() if n in before and before[n] != t},
    )
