"""Minimum-necessary access: which license types a client may receive for a matter.

A read names a matter (办事事项). The matter lists its materials, some of them license types of
the catalogue; the client is granted some matters and some license types. The client receives a
license type only if the matter lists it **and** the client is granted it -- and a ``not_shared``
type only if the client belongs to the issuing department. Everything else is treated exactly as
if the holder had no such license, so a client cannot learn that an ungranted license exists.

This module decides; it reads no licenses. :class:`AccessDenied` carries the stable problem code
the API answers with.
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange.config import Deployment, LicenseType, Material, Matter
from license_store.clients import ApiClient

__all__ = ["AccessDenied", "MaterialAccess", "MatterAccess", "UnknownMatter", "resolve_matter"]


class AccessDenied(Exception):
    """The client may not make this read at all (HTTP 403); ``code`` is the problem code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class UnknownMatter(ValueError):
    """No matter of the catalogue has this code (HTTP 422)."""


@dataclass(frozen=True, slots=True)
class MaterialAccess:
    """One material of a matter, and whether the client may receive it from the library."""

    material: Material
    license_type: LicenseType | None  # None: the applicant provides it (no electronic license)
    shared: bool  # the client may receive this license type for this matter


@dataclass(frozen=True, slots=True)
class MatterAccess:
    """What one client may receive for one matter."""

    matter: Matter
    materials: tuple[MaterialAccess, ...]

    @property
    def type_codes(self) -> frozenset[str]:
        """Catalogue codes of the license types the client may receive for the matter."""
        return frozenset(
            item.license_type.code
            for item in self.materials
            if item.license_type is not None and item.shared
        )


def _shared_with(license_type: LicenseType, client: ApiClient) -> bool:
    if license_type.id not in client.license_types:
        return False
    if license_type.sharing == "not_shared":
        return client.department == license_type.issuing_department
    return True


def resolve_matter(deployment: Deployment, client: ApiClient, matter_code: str) -> MatterAccess:
    """The client's access for ``matter_code``.

    :class:`UnknownMatter` if the catalogue has no such matter; :class:`AccessDenied`
    (``matter_not_granted``) if the client does not handle it.
    """
    matter = next((item for item in deployment.matters if item.code == matter_code), None)
    if matter is None:
        raise UnknownMatter("no matter of the catalogue has this code")
    if matter.code not in client.matters:
        raise AccessDenied(
            "matter_not_granted", f"this client is not granted the matter {matter.code}"
        )
    types = deployment.license_type_by_id
    materials = []
    for material in matter.materials:
        license_type = types.get(material.license_type) if material.license_type else None
        shared = license_type is not None and _shared_with(license_type, client)
        materials.append(MaterialAccess(material, license_type, shared))
    return MatterAccess(matter, tuple(materials))
