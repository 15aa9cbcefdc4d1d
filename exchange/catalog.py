"""The resource catalogue (政务信息资源目录): each dataset with its owner, sharing type, update
frequency, the sources feeding it and the fields it holds.

Fields and their types are read from the data: the schema each feeding source last had accepted
(see :mod:`exchange.schema_drift`), so the catalogue never drifts from what is really stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exchange.config import Deployment
from exchange.state import ExchangeState

__all__ = ["CatalogEntry", "build_catalog"]

INTERNAL_COLUMNS = ("_govx_",)


@dataclass(frozen=True)
class CatalogEntry:
    """One dataset as the catalogue shows it."""

    id: str
    name: str
    owner: str
    owner_region: str
    sharing: str
    update_frequency: str
    sources: list[str]
    fields: list[dict[str, str]] = field(default_factory=list)
    description: str | None = None


def build_catalog(deployment: Deployment, state: ExchangeState) -> list[CatalogEntry]:
    """The catalogue of every configured dataset, fields from the accepted schemas."""
    entries = []
    for dataset in deployment.datasets:
        owner = deployment.department_by_id[dataset.department]
        sources = [s.id for s in deployment.sources if s.dataset == dataset.id]
        fields: dict[str, str] = {}
        for source_id in sources:
            for column in state.accepted_schema(source_id) or []:
                if not column["name"].startswith(INTERNAL_COLUMNS):
                    fields.setdefault(column["name"], column["type"])
        entries.append(
            CatalogEntry(
                id=dataset.id,
                name=dataset.name,
                owner=owner.name,
                owner_region=owner.region,
                sharing=dataset.sharing,
                update_frequency=dataset.update_frequency,
                sources=sources,
                fields=[{"name": n, "type": t} for n, t in fields.items()],
                description=dataset.description,
            )
        )
    return entries
