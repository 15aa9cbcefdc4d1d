"""Benchmark the intake lookup (GET /v1/holders/{id}/licenses) against a raw SQL point lookup.

    .venv/bin/python bench/lookup.py [--pg-size 10000000] [--sqlite-size 1000000] [--duration 30]

On the same data, in the same run:

- PostgreSQL (database ``govx_bench_lookup``, 10M licenses): the API under
  ``govx serve --workers 2`` driven by ``wrk`` (``bench/lookup.lua`` rotates 100k holder IDs,
  sends the bearer token and a case id), against ``pgbench`` running the statement the store
  runs for one holder (:func:`license_store.store.select_holder_licenses`), the holder picked
  at random from the same 100k through the ``bench.holders`` helper table.
- SQLite (a 1M-license file): the same API, against a Python ``sqlite3`` loop running that
  statement in two processes (no pgbench there).

With ``license_store.clients`` present, every request is authenticated (an intake client
registered for the run, an OAuth2 client-credentials token) and audited by the server (a durable
write into the same database): both are part of what is measured. Without it, the unauthenticated
endpoint is measured and the output says so.

Data are generated once and kept (a marker records the row count and the generator version);
``--regenerate`` rebuilds them. Licenses are realistic: valid resident IDs of the deployment's
Guangdong county regions, 1-4 licenses per holder over the natural-person license types of the
config, valid license identifiers and content hashes. PostgreSQL is loaded by ``COPY ... FREEZE``
into the Alembic-migrated table with its indexes dropped and rebuilt from their own definitions
(the schema is compared before and after). Only ``licenses`` and ``license_sequences`` are filled;
the lookup does not read ``license_versions``. The load generator and the server share the
2-core machine: absolute figures are this machine's; the ratio is what to compare between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import datetime as dt
import hashlib
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from sqlalchemy.dialects import postgresql as pg_dialect  # noqa: E402
from sqlalchemy.dialects import sqlite as sqlite_dialect  # noqa: E402
from stdnum.iso7064 import mod_37_36  # noqa: E402

from exchange.config import Deployment, load_deployment  # noqa: E402
from exchange.demo.people import (  # noqa: E402
    RESIDENCE_REGIONS,
    card_term_years,
    given_name,
    id_region_code,
    pick_region,
    resident_id,
    street_address,
    surname,
)
from exchange.standards.dates import add_years  # noqa: E402
from exchange.standards.holder_ids import validate_ric  # noqa: E402
from exchange.standards.license_ids import LicenseIdentifier, parse_license_id  # noqa: E402
from license_store.database import dump_json  # noqa: E402
from license_store.models import licenses  # noqa: E402
from license_store.records import LicenseRecord, content_hash  # noqa: E402
from license_store.store import LicenseStore, select_holder_licenses  # noqa: E402

GENERATOR_VERSION = 1
SEED = 20261128
MATTER = "11440600MB20125487-XSE-001"  # 新生儿入户登记: the intake window's matter
RUN_ID = f"bench-lookup-v{GENERATOR_VERSION}"
LOADED_AT = "2026-11-28 00:00:00+00"
TODAY = dt.date(2026, 11, 28)
CHUNK_LICENSES = 50_000
MAX_CHUNKS = 999  # holder-ID sequence numbers 1..999 are split between chunks
HOLDERS_SAMPLE = 100_000
LICENSES_PER_HOLDER = ((1, 0.20), (2, 0.35), (3, 0.30), (4, 0.15))
TARGET_RPS = 2_500
TARGET_P99_MS = 25.0
TARGET_RATIO = 0.2
PG_URL = "postgresql://postgres@127.0.0.1:5432/govx_bench_lookup"
DATA_DIR = REPO / "var" / "bench-lookup"
# The licenses table's columns in their order (the COPY text lines are written in this order).
COLUMNS = tuple(column.name for column in licenses.columns)


# -- the generator ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TypeSpec:
    """A natural-person license type as the generator needs it."""

    id: str
    code: str
    name: str
    issuer_code: str
    issuer_name: str
    region_code: str
    source_id: str
    check_state: int  # ISO 7064 MOD 37,36 state after type code + issuer code


@dataclass(frozen=True)
class ChunkSpec:
    """One unit of generation: licenses ``first_id .. first_id + licenses - 1``."""

    number: int
    chunks: int
    first_id: int
    licenses: int
    sample_stride: int
    as_copy_text: bool


@dataclass
class Chunk:
    """What a worker hands back: the rows (COPY text or tuples) and what the loader needs."""

    payload: bytes | list[tuple[Any, ...]]
    licenses: int
    holders: int
    sampled: list[str]
    last_serials: dict[tuple[str, str, int], int] = field(default_factory=dict)


_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_VALUE = {char: value for value, char in enumerate(_ALPHABET)}
_TYPES: dict[str, TypeSpec] = {}


def _check_state(text: str, state: int = 18) -> int:
    """``stdnum.iso7064.mod_37_36.checksum`` continued from ``state`` (18 = the start).

    Every identifier of a type shares its first 36 characters; carrying their state over makes
    the check character 4x cheaper. :func:`_verify_chunk` compares it with stdnum's.
    """
    for char in text:
        state = (((state or 36) * 2) % 37 + _VALUE[char]) % 36
    return state


def _check_char(state: int) -> str:
    return _ALPHABET[(1 - ((state or 36) * 2) % 37) % 36]


def natural_types(deployment: Deployment) -> dict[str, TypeSpec]:
    """The natural-person license types of the config, with issuer and feeding source."""
    source_of = {m.type: s.id for s in deployment.sources for m in s.licenses}
    types: dict[str, TypeSpec] = {}
    for ltype in deployment.license_types:
        if ltype.holder_kind.value != "natural":
            continue
        department = deployment.department_by_id[ltype.issuing_department]
        types[ltype.id] = TypeSpec(
            id=ltype.id,
            code=ltype.code,
            name=ltype.name,
            issuer_code=department.code,
            issuer_name=department.name,
            region_code=department.region,
            source_id=source_of.get(ltype.id, f"bench_{ltype.id}"),
            check_state=_check_state(ltype.code + department.code),
        )
    return types


def _license_count(rng: random.Random) -> int:
    roll = rng.random()
    for count, share in LICENSES_PER_HOLDER:
        roll -= share
        if roll < 0:
            return count
    return LICENSES_PER_HOLDER[-1][0]


def _day(rng: random.Random, start: dt.date, end: dt.date = TODAY) -> dt.date:
    """A day in ``[start, end]``; ``end`` when the range is empty."""
    span = (end - start).days
    return start + dt.timedelta(days=int(rng.random() * (span + 1))) if span >= 0 else end


def _eligible(birth: dt.date) -> list[str]:
    """License types a person born on ``birth`` can hold today."""
    age = TODAY.year - birth.year
    kinds = ["household_register"]
    if age >= 16:
        kinds.append("resident_id_card")
    if age >= 22:
        kinds.append("marriage_certificate")
    if age >= 25:
        kinds.append("real_estate_certificate")
    if birth.year >= 1996:
        kinds.append("birth_medical_certificate")
    return [kind for kind in kinds if kind in _TYPES]


@dataclass
class _Pools:
    """Names and addresses drawn once per chunk and reused (drawing them is the slow part)."""

    rng: random.Random
    names: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    addresses: dict[str, list[str]] = field(default_factory=dict)

    def name(self, gender: str, birth_year: int) -> str:
        key = (gender, 0 if birth_year < 1970 else 1 if birth_year < 1995 else 2)
        pool = self.names.get(key)
        if pool is None:
            pool = self.names[key] = [
                surname(self.rng) + given_name(self.rng, gender, birth_year) for _ in range(500)
            ]
        return pool[int(self.rng.random() * len(pool))]

    def address(self, region: Any) -> str:
        pool = self.addresses.get(region.code)
        if pool is None:
            pool = self.addresses[region.code] = [
                "广东省" + street_address(self.rng, region) for _ in range(500)
            ]
        return pool[int(self.rng.random() * len(pool))]


def _license_face(
    rng: random.Random, pools: _Pools, kind: str, person: dict[str, Any]
) -> tuple[str, dt.date, dt.date | None, dict[str, str]]:
    """Number, issue date, valid-to and face of one license (face keys in sorted order)."""
    birth: dt.date = person["birth"]
    draw = rng.random
    if kind == "resident_id_card":
        issued = _day(rng, max(add_years(birth, 16), dt.date(1990, 1, 1)))
        term = card_term_years(issued.year - birth.year)
        valid_to = None if term is None else add_years(issued, term)
        face = {
            "address": person["address"],
            "authority": person["authority"],
            "birth_date": birth.isoformat(),
            "ethnicity": "汉",
            "gender": person["gender"],
        }
        return person["id"], issued, valid_to, face
    if kind == "household_register":
        issued = _day(rng, max(birth, dt.date(1995, 1, 1)))
        face = {
            "address": person["address"],
            "household_no": person["household_no"],
            "relation": ("户主", "配偶", "子", "女")[int(draw() * 4)],
        }
        return person["register_no"], issued, None, face
    if kind == "marriage_certificate":
        issued = _day(rng, add_years(birth, 22))
        male = person["gender"] == "男"
        spouse = pools.name("女" if male else "男", birth.year)
        face = {
            "husband_name": person["name"] if male else spouse,
            "register_office": f"{person['place']}民政局婚姻登记处",
            "wife_name": spouse if male else person["name"],
        }
        number = f"J{person['region']}-{issued.year}-{int(draw() * 999_999) + 1:06d}"
        return number, issued, None, face
    if kind == "real_estate_certificate":
        issued = _day(rng, max(add_years(birth, 25), dt.date(2016, 1, 1)))
        face = {
            "area_m2": f"{45 + draw() * 115:.2f}",
            "location": person["address"],
            "right_type": "国有建设用地使用权/房屋所有权",
            "usage": "城镇住宅用地/住宅",
        }
        number = f"粤({issued.year}){person['place']}不动产权第{int(draw() * 9_999_999) + 1:07d}号"
        return number, issued, None, face
    # birth_medical_certificate: the holder is the baby
    issued = min(birth + dt.timedelta(days=1 + int(draw() * 29)), TODAY)
    letter = "KLMNOPQRST"[min(max(issued.year - 2005, 0) // 2, 9)]
    face = {
        "baby_gender": person["gender"],
        "baby_name": person["name"],
        "birth_date": birth.isoformat(),
        "birth_place": f"{person['place']}妇幼保健院",
        "father_name": person["surname"] + given_name(rng, "男", birth.year - 28),
        "mother_name": pools.name("女", birth.year - 28),
    }
    return f"{letter}44{int(draw() * 10_000_000):07d}", issued, None, face


def _person(rng: random.Random, pools: _Pools, spec: ChunkSpec, taken: set[str]) -> dict[str, Any]:
    """A resident of a deployment county with a resident ID unique across every chunk."""
    region = pick_region(rng)
    # sequence numbers are dealt out to chunks: chunk k owns those = k + 1 (mod chunks)
    slots = (998 - spec.number) // spec.chunks + 1
    while True:
        birth = _day(rng, dt.date(1940, 1, 1), dt.date(2024, 12, 31))
        code = id_region_code(rng, region, birth.year)
        sequence = spec.number + 1 + spec.chunks * int(rng.random() * slots)
        holder_id = resident_id(code, birth, sequence)
        if holder_id not in taken:
            taken.add(holder_id)
            break
    gender = "男" if sequence % 2 else "女"
    name = pools.name(gender, birth.year)
    return {
        "id": holder_id,
        "region": region.code,
        "place": region.place,
        "birth": birth,
        "gender": gender,
        "surname": name[0],
        "name": name,
        "address": pools.address(region),
        "authority": region.card_authority,
        "household_no": f"{int(rng.random() * 10**8):09d}",
        "register_no": f"{region.code}{int(rng.random() * 10**6):06d}",
    }


def _face_text(face: dict[str, str]) -> str:
    """``face`` as compact JSON (no value holds a quote, a backslash or a control character)."""
    return "{" + ",".join([f'"{key}":"{value}"' for key, value in face.items()]) + "}"


def _content_text(row: dict[str, Any], face_text: str) -> str:
    """Canonical JSON of a license's content (:func:`license_store.records.canonical_json`)."""
    valid_to = "null" if row["valid_to"] is None else f'"{row["valid_to"]}"'
    return (
        f'{{"face":{face_text},"holder_id":"{row["holder_id"]}","holder_kind":"natural",'
        f'"holder_name":"{row["holder_name"]}","issue_date":"{row["issue_date"]}",'
        f'"issuer_code":"{row["issuer_code"]}","issuer_name":"{row["issuer_name"]}",'
        f'"number":"{row["number"]}","region_code":"{row["region_code"]}",'
        f'"status":"{row["status"]}","type_code":"{row["type_code"]}",'
        f'"type_name":"{row["type_name"]}","valid_from":"{row["valid_from"]}",'
        f'"valid_to":{valid_to}}}'
    )


def _rows(spec: ChunkSpec, chunk: Chunk) -> Iterator[dict[str, Any]]:
    rng = random.Random(SEED * 1_000 + spec.number)
    pools = _Pools(random.Random(SEED))  # the same names and addresses in every chunk
    taken: set[str] = set()
    serials: dict[tuple[str, str, int], int] = collections.defaultdict(int)
    made = 0
    while made < spec.licenses:
        person = _person(rng, pools, spec, taken)
        if chunk.holders % spec.sample_stride == 0:
            chunk.sampled.append(person["id"])
        chunk.holders += 1
        kinds = _eligible(person["birth"])
        count = min(_license_count(rng), len(kinds), spec.licenses - made)
        for kind in sorted(rng.sample(kinds, count)):
            ltype = _TYPES[kind]
            number, issued, valid_to, face = _license_face(rng, pools, kind, person)
            group = (ltype.code, ltype.issuer_code, issued.year)
            serials[group] += 1
            serial = (serials[group] - 1) * spec.chunks + spec.number + 1
            chunk.last_serials[group] = serial
            sequence = f"{issued.year:04d}{serial:07d}"
            base = f"1.2.156.3005.2.{ltype.code}.{ltype.issuer_code}.{sequence}"
            check = _check_char(_check_state(sequence + "001", ltype.check_state))
            issue_date = issued.isoformat()
            yield {
                "id": spec.first_id + made,
                "license_base": base,
                "license_id": f"{base}.001.{check}",
                "type_code": ltype.code,
                "type_name": ltype.name,
                "issuer_code": ltype.issuer_code,
                "issuer_name": ltype.issuer_name,
                "sequence": sequence,
                "region_code": ltype.region_code,
                "holder_id": person["id"],
                "holder_kind": "natural",
                "holder_name": person["name"],
                "number": number,
                "issue_date": issue_date,
                "valid_from": issue_date,
                "valid_to": None if valid_to is None else valid_to.isoformat(),
                "status": "revoked" if rng.random() < 0.01 else "valid",
                "face": face,
                "source_id": ltype.source_id,
            }
            made += 1


def _verify_row(row: dict[str, Any], face_text: str, digest: str) -> None:
    """The shortcuts taken for speed give what the store's own functions give."""
    assert str(parse_license_id(row["license_id"])) == row["license_id"]
    ident = LicenseIdentifier(row["type_code"], row["issuer_code"], row["sequence"], 1)
    assert str(ident) == row["license_id"], (ident, row["license_id"])
    assert mod_37_36.calc_check_digit(row["license_id"][15:-2].replace(".", "")) == ident.check
    assert validate_ric(row["holder_id"], today=TODAY) == row["holder_id"]
    dates = {"issue_date", "valid_from", "valid_to"}
    record = LicenseRecord(
        **{
            f.name: row[f.name]
            for f in dataclasses.fields(LicenseRecord)
            if f.name not in dates and f.name != "run_id"
        },
        **{name: None if row[name] is None else dt.date.fromisoformat(row[name]) for name in dates},
        run_id=RUN_ID,
    )
    assert content_hash(record) == digest, row["license_id"]
    assert face_text == dump_json(row["face"])


def generate_chunk(spec: ChunkSpec) -> Chunk:
    """Generate one chunk of licenses (runs in a worker process)."""
    chunk = Chunk(payload=b"", licenses=0, holders=0, sampled=[])
    lines: list[str] = []
    tuples: list[tuple[Any, ...]] = []
    sha256 = hashlib.sha256
    for index, row in enumerate(_rows(spec, chunk)):
        face_text = _face_text(row["face"])
        digest = sha256(_content_text(row, face_text).encode()).hexdigest()
        if index < 50:
            _verify_row(row, face_text, digest)
        if spec.as_copy_text:  # no value holds a tab, newline or backslash
            valid_to = row["valid_to"] or r"\N"
            lines.append(
                f"{row['id']}\t{row['license_base']}\t{row['license_id']}\t{row['type_code']}\t"
                f"{row['type_name']}\t{row['issuer_code']}\t{row['issuer_name']}\t"
                f"{row['sequence']}\t1\t{row['region_code']}\t{row['holder_id']}\tnatural\t"
                f"{row['holder_name']}\t{row['number']}\t{row['issue_date']}\t"
                f"{row['valid_from']}\t{valid_to}\t{row['status']}\t{face_text}\t{digest}\t"
                f"{row['source_id']}\t{RUN_ID}\t{LOADED_AT}\t{LOADED_AT}"
            )
        else:
            tuples.append(
                (
                    row["id"],
                    row["license_base"],
                    row["license_id"],
                    row["type_code"],
                    row["type_name"],
                    row["issuer_code"],
                    row["issuer_name"],
                    row["sequence"],
                    1,
                    row["region_code"],
                    row["holder_id"],
                    "natural",
                    row["holder_name"],
                    row["number"],
                    row["issue_date"],
                    row["valid_from"],
                    row["valid_to"],
                    row["status"],
                    face_text,
                    digest,
                    row["source_id"],
                    RUN_ID,
                    LOADED_AT,
                    LOADED_AT,
                )
            )
        chunk.licenses += 1
    chunk.payload = ("\n".join(lines) + "\n").encode() if spec.as_copy_text else tuples
    return chunk


def chunk_specs(size: int, as_copy_text: bool) -> list[ChunkSpec]:
    """Split ``size`` licenses into chunks of about :data:`CHUNK_LICENSES`."""
    chunks = min(MAX_CHUNKS, max(1, -(-size // CHUNK_LICENSES)))
    stride = max(1, int(size / 2.6 / HOLDERS_SAMPLE))
    specs, first = [], 1
    for number in range(chunks):
        licenses = size // chunks + (1 if number < size % chunks else 0)
        specs.append(ChunkSpec(number, chunks, first, licenses, stride, as_copy_text))
        first += licenses
    return specs


def generate(size: int, as_copy_text: bool, workers: int = 2) -> Iterator[Chunk]:
    """The chunks of ``size`` licenses, in order, from ``workers`` processes (bounded memory)."""
    _TYPES.update(natural_types(load_deployment(REPO / "config")))
    for region in RESIDENCE_REGIONS:  # fill stdnum's region cache once, before the fork
        for year in range(1940, 2025):
            id_region_code(random.Random(0), region, year)
    specs = chunk_specs(size, as_copy_text)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pending: collections.deque[Any] = collections.deque()
        for spec in specs:
            pending.append(pool.apply_async(generate_chunk, (spec,)))
            if len(pending) > workers + 1:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def holders_sample(sampled: list[str]) -> list[str]:
    """Up to :data:`HOLDERS_SAMPLE` of the sampled holders, shuffled (the same every run)."""
    random.Random(SEED).shuffle(sampled)
    return sampled[:HOLDERS_SAMPLE]


def write_holders(path: Path, holders: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{h}\n" for h in holders))


def progress(done: int, total: int, start: float) -> None:
    elapsed = time.perf_counter() - start
    print(
        f"\r  {done:>12,} / {total:,} licenses, {done / elapsed:,.0f}/s   ",
        end="",
        flush=True,
    )


# -- PostgreSQL ---------------------------------------------------------------------------------


@dataclass
class Loaded:
    """Data ready for the run: how big, how fast it was loaded, the holders to rotate through."""

    licenses: int
    load_seconds: float
    holders_file: Path
    holders: int
    kept: bool


def _admin_url(url: str) -> str:
    return url.rsplit("/", 1)[0] + "/postgres"


def _dbname(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?")[0]


def ensure_database(url: str) -> None:
    with psycopg.connect(_admin_url(url), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (_dbname(url),)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{_dbname(url)}"')


def _pg_marker(url: str) -> dict[str, Any] | None:
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT to_regclass('bench.marker')").fetchone()
        if found is None or found[0] is None:
            return None
        row = conn.execute(
            "SELECT generator_version, licenses, load_seconds, holders FROM bench.marker"
        ).fetchone()
        if row is None:
            return None
        count = conn.execute("SELECT count(*) FROM licenses").fetchone()
        return {
            "generator_version": row[0],
            "licenses": row[1],
            "load_seconds": row[2],
            "holders": row[3],
            "count": count[0] if count else -1,
        }


def _schema_of(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """Constraints and indexes of ``licenses`` and the foreign keys into it, as definitions."""
    rows = conn.execute(
        """
        SELECT 'constraint ' || conrelid::regclass || '.' || conname, pg_get_constraintdef(oid)
          FROM pg_constraint
         WHERE conrelid = 'licenses'::regclass OR confrelid = 'licenses'::regclass
        UNION ALL
        SELECT 'index ' || indexname, indexdef FROM pg_indexes
         WHERE schemaname = 'public' AND tablename = 'licenses'
        ORDER BY 1
        """
    ).fetchall()
    return [(name, definition) for name, definition in rows]


def _drop_indexes(conn: psycopg.Connection) -> list[str]:
    """Drop the indexes of ``licenses`` (and the foreign keys needing them); the DDL to redo it."""
    foreign = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE confrelid = 'licenses'::regclass AND contype = 'f'"
    ).fetchall()
    owned = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid), contype FROM pg_constraint "
        "WHERE conrelid = 'licenses'::regclass AND contype IN ('p', 'u') ORDER BY contype"
    ).fetchall()
    plain = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "AND tablename = 'licenses' AND indexname NOT IN "
        "(SELECT conname FROM pg_constraint WHERE conrelid = 'licenses'::regclass)"
    ).fetchall()
    redo: list[str] = []
    for table, name, _definition in foreign:
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, definition, _kind in owned:
        conn.execute(f'ALTER TABLE licenses DROP CONSTRAINT "{name}"')
        redo.append(f'ALTER TABLE licenses ADD CONSTRAINT "{name}" {definition}')
    for name, definition in plain:
        conn.execute(f'DROP INDEX "{name}"')
        redo.append(definition)
    redo += [
        f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'
        for table, name, definition in foreign
    ]
    return redo


def load_postgres(url: str, size: int, holders_file: Path, regenerate: bool) -> Loaded:
    """Make sure ``url`` holds ``size`` generated licenses; generate and load them if not."""
    ensure_database(url)
    with LicenseStore(url) as store:
        store.upgrade()
    marker = _pg_marker(url)
    if (
        not regenerate
        and marker is not None
        and marker["generator_version"] == GENERATOR_VERSION
        and marker["licenses"] == marker["count"] == size
    ):
        if not holders_file.exists():
            with psycopg.connect(url) as conn:
                rows = conn.execute("SELECT holder_id FROM bench.holders ORDER BY i").fetchall()
            write_holders(holders_file, [r[0] for r in rows])
        return Loaded(size, marker["load_seconds"], holders_file, marker["holders"], kept=True)

    print(f"PostgreSQL: generating and loading {size:,} licenses into {_dbname(url)}")
    start = time.perf_counter()
    sampled: list[str] = []
    last_serials: dict[tuple[str, str, int], int] = {}
    with psycopg.connect(url) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '1GB'")
        before = _schema_of(conn)
        conn.execute("TRUNCATE licenses, license_versions, license_sequences CASCADE")
        redo = _drop_indexes(conn)
        done = 0
        with (
            conn.cursor() as cursor,
            cursor.copy(f"COPY licenses ({', '.join(COLUMNS)}) FROM STDIN WITH (FREEZE)") as copy,
        ):
            for chunk in generate(size, as_copy_text=True):
                assert isinstance(chunk.payload, bytes)
                copy.write(chunk.payload)
                sampled += chunk.sampled
                for group, serial in chunk.last_serials.items():
                    last_serials[group] = max(serial, last_serials.get(group, 0))
                done += chunk.licenses
                progress(done, size, start)
        copied = time.perf_counter() - start
        print(f"\n  copied in {copied:.0f} s; rebuilding {len(redo)} indexes and constraints")
        for statement in redo:
            conn.execute(statement)
        after = _schema_of(conn)
        if after != before:
            raise RuntimeError(f"schema changed by the load: {set(before) ^ set(after)}")
        conn.execute("SELECT setval(pg_get_serial_sequence('licenses', 'id'), %s)", (size,))
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO license_sequences (type_code, issuer_code, year, last_serial) "
                "VALUES (%s, %s, %s, %s)",
                [(*group, serial) for group, serial in sorted(last_serials.items())],
            )
        holders = holders_sample(sampled)
        conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
        conn.execute("DROP TABLE IF EXISTS bench.holders, bench.marker")
        conn.execute("CREATE TABLE bench.holders (i integer PRIMARY KEY, holder_id text NOT NULL)")
        with conn.cursor() as cursor, cursor.copy("COPY bench.holders FROM STDIN") as copy:
            for i, holder in enumerate(holders, 1):
                copy.write_row((i, holder))
        seconds = time.perf_counter() - start
        conn.execute(
            "CREATE TABLE bench.marker AS SELECT %s::int AS generator_version, "
            "%s::bigint AS licenses, %s::float AS load_seconds, %s::int AS holders",
            (GENERATOR_VERSION, size, seconds, len(holders)),
        )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE licenses")
        conn.execute("ANALYZE bench.holders")
    with LicenseStore(url) as store:
        current = store.is_current()
    if not current:
        raise RuntimeError("the bench database is not at the migrations' head after the load")
    write_holders(holders_file, holders)
    print(f"  loaded in {seconds:.0f} s ({size / seconds:,.0f} licenses/s), schema as migrated")
    return Loaded(size, seconds, holders_file, len(holders), kept=False)


def lookup_sql(dialect: Any) -> str:
    """The store's holder lookup as SQL text with one positional/named holder parameter."""
    return str(select_holder_licenses("x").compile(dialect=dialect))


def pgbench_script(path: Path) -> Path:
    """The pgbench script: the store's statement for one random holder of ``bench.holders``."""
    sql = lookup_sql(pg_dialect.dialect())
    sql = re.sub(r"%\(holder_id_1\)s", "(SELECT holder_id FROM bench.holders WHERE i = :i)", sql)
    path.write_text("\\set i random(1, :n)\n" + " ".join(sql.split()) + ";\n")
    return path


@dataclass
class Baseline:
    what: str
    rate: float
    latency_ms: float | None = None


def run_pgbench(url: str, script: Path, holders: int, clients: int, duration: int) -> Baseline:
    command = [
        "pgbench",
        "-n",
        "-M",
        "prepared",
        "-c",
        str(clients),
        "-j",
        "2",
        "-T",
        str(duration),
        "-D",
        f"n={holders}",
        "-f",
        str(script),
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    tps = re.search(r"tps = ([0-9.]+) \(without initial", out)
    latency = re.search(r"latency average = ([0-9.]+) ms", out)
    if tps is None:
        raise RuntimeError(f"pgbench printed no tps:\n{out}")
    return Baseline(
        f"pgbench -M prepared -c {clients} -j 2: the store's SELECT for a random one of "
        f"{holders:,} holders",
        float(tps.group(1)),
        float(latency.group(1)) if latency else None,
    )


def warm_postgres(url: str) -> float:
    """Read every sampled holder's licenses once (index and heap into the caches)."""
    start = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute("SET enable_hashjoin = off")
        conn.execute("SET enable_mergejoin = off")
        conn.execute(
            "SELECT count(*), sum(length(l.face::text)) FROM bench.holders h "
            "JOIN licenses l ON l.holder_id = h.holder_id"
        ).fetchone()
    return time.perf_counter() - start


# -- SQLite -------------------------------------------------------------------------------------


def load_sqlite(path: Path, size: int, holders_file: Path, regenerate: bool) -> Loaded:
    """Make sure the SQLite file at ``path`` holds ``size`` generated licenses."""
    marker_file = path.with_suffix(".marker.json")
    url = f"sqlite:///{path}"
    if not regenerate and path.exists() and marker_file.exists() and holders_file.exists():
        marker = json.loads(marker_file.read_text())
        with sqlite3.connect(path) as conn:
            count = conn.execute("SELECT count(*) FROM licenses").fetchone()[0]
        if marker["generator_version"] == GENERATOR_VERSION and marker["licenses"] == count == size:
            return Loaded(size, marker["load_seconds"], holders_file, marker["holders"], True)
    print(f"SQLite: generating and loading {size:,} licenses into {path}")
    for stale in (path, marker_file, path.with_name(path.name + "-wal")):
        stale.unlink(missing_ok=True)
    path.with_name(path.name + "-shm").unlink(missing_ok=True)
    start = time.perf_counter()
    with LicenseStore(url) as store:
        store.upgrade()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -1000000")
    index_sql = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'ix_licenses_holder_id'"
    ).fetchone()[0]
    conn.execute("BEGIN")
    conn.execute("DROP INDEX ix_licenses_holder_id")
    insert = f"INSERT INTO licenses ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    sampled: list[str] = []
    last_serials: dict[tuple[str, str, int], int] = {}
    done = 0
    for chunk in generate(size, as_copy_text=False):
        conn.executemany(insert, chunk.payload)
        sampled += chunk.sampled
        for group, serial in chunk.last_serials.items():
            last_serials[group] = max(serial, last_serials.get(group, 0))
        done += chunk.licenses
        progress(done, size, start)
    conn.execute(index_sql)
    conn.executemany(
        "INSERT INTO license_sequences (type_code, issuer_code, year, last_serial) "
        "VALUES (?, ?, ?, ?)",
        [(*group, serial) for group, serial in sorted(last_serials.items())],
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    seconds = time.perf_counter() - start
    holders = holders_sample(sampled)
    write_holders(holders_file, holders)
    marker_file.write_text(
        json.dumps(
            {
                "generator_version": GENERATOR_VERSION,
                "licenses": size,
                "load_seconds": seconds,
                "holders": len(holders),
            }
        )
    )
    print(f"\n  loaded in {seconds:.0f} s ({size / seconds:,.0f} licenses/s)")
    return Loaded(size, seconds, holders_file, len(holders), kept=False)


def _sqlite_loop(args: tuple[str, list[str], float]) -> int:
    path, holders, seconds = args
    sql = lookup_sql(sqlite_dialect.dialect())
    conn = sqlite3.connect(path)
    done, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(200):
            conn.execute(sql, (holders[done % len(holders)],)).fetchall()
            done += 1
    conn.close()
    return done


def run_sqlite_loop(path: Path, holders_file: Path, duration: int) -> Baseline:
    """Two processes (the machine's cores) running the store's SELECT for rotating holders."""
    holders = holders_file.read_text().split()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        start = time.perf_counter()
        counts = pool.map(
            _sqlite_loop, [(str(path), holders, duration), (str(path), holders[::-1], duration)]
        )
        seconds = time.perf_counter() - start
    return Baseline(
        "Python sqlite3 loop in 2 processes: the store's SELECT for rotating holders",
        sum(counts) / seconds,
    )


# -- the API under load -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``govx serve --workers 2`` (a socket per worker) serving the license API on ``url``'s
    store, on a loopback port, without the access log."""

    def __init__(self, url: str, home: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "server.log"
        env = {
            **os.environ,
            "GOVX_LICENSE_DB_URL": url,
            "GOVX_HOME": str(home),
            "GOVX_CONFIG": str(REPO / "config"),
        }
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("govx")),
                "serve",
                "--workers",
                "2",
                "--no-access-log",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=REPO,
            env=env,
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the API did not become ready:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@dataclass
class Access:
    """How the load generator calls the API: a token (``None``: unauthenticated), its client."""

    token: str | None
    note: str
    revoke: Callable[[], None] = lambda: None


def intake_access(url: str, base: str, deployment: Deployment) -> Access:
    """Register an intake client for the matter and get a token, once the API has auth."""
    try:
        from license_store.clients import ClientRegistry  # type: ignore[import-not-found]
    except ImportError:
        return Access(None, "UNAUTHENTICATED: license_store.clients is not there yet")
    matter = deployment.matter_by_code[MATTER]
    types = [m.license_type for m in matter.materials if m.license_type]
    registry = ClientRegistry(url)
    client, secret = registry.add(
        name="bench intake", kind="intake", matters=[MATTER], license_types=types
    )
    client_id = getattr(client, "client_id", client)
    answer = httpx.post(
        f"{base}/v1/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        timeout=30,
    )
    answer.raise_for_status()
    return Access(
        answer.json()["access_token"],
        f"authenticated (intake client {client_id}, matter {MATTER}) and audited",
        lambda: registry.revoke(client_id),
    )


def check_one(base: str, holder: str, access: Access) -> dict[str, Any]:
    """One request as the load generator will send it: must answer 200 with licenses."""
    headers = {"X-Case-Id": "bench-check"}
    if access.token:
        headers["Authorization"] = f"Bearer {access.token}"
    answer = httpx.get(
        f"{base}/v1/holders/{holder}/licenses", params={"matter": MATTER}, headers=headers
    )
    if answer.status_code != 200:
        raise RuntimeError(f"lookup answered {answer.status_code}: {answer.text[:500]}")
    body: dict[str, Any] = answer.json()
    if not body.get("count"):
        raise RuntimeError(f"lookup found no licenses for a loaded holder: {answer.text[:300]}")
    return body


@dataclass
class Load:
    tool: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    socket_errors: int = 0


def run_wrk(base: str, holders_file: Path, access: Access, connections: int, duration: int) -> Load:
    command = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(REPO / "bench" / "lookup.lua"),
        f"{base}/",
        "--",
        str(holders_file),
        access.token or "",
        MATTER,
        "2",
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = re.search(r"^WRK_JSON (.*)$", out, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    summary = json.loads(found.group(1))
    return Load(
        f"wrk -t2 -c{connections} (bench/lookup.lua)",
        summary["requests"] / summary["duration_us"] * 1e6,
        summary["p50_us"] / 1000,
        summary["p99_us"] / 1000,
        summary["requests"],
        summary["non_2xx"],
        summary["socket_errors"],
    )


async def _httpx_load(
    base: str, holders: list[str], access: Access, connections: int, duration: int
) -> Load:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Authorization": f"Bearer {access.token}"} if access.token else {}
    async with httpx.AsyncClient(base_url=base, limits=limits, headers=headers) as client:
        deadline = time.perf_counter() + duration
        start = time.perf_counter()

        async def worker(offset: int) -> None:
            nonlocal errors
            n = offset
            while time.perf_counter() < deadline:
                n += connections
                sent = time.perf_counter()
                answer = await client.get(
                    f"/v1/holders/{holders[n % len(holders)]}/licenses",
                    params={"matter": MATTER},
                    headers={"X-Case-Id": f"bench-{n}"},
                )
                latencies.append(time.perf_counter() - sent)
                errors += answer.status_code != 200

        await asyncio.gather(*(worker(i) for i in range(connections)))
        seconds = time.perf_counter() - start
    latencies.sort()
    return Load(
        f"httpx asyncio client, {connections} connections (one Python process, itself a "
        "bottleneck: compare with wrk's figures only loosely)",
        len(latencies) / seconds,
        latencies[len(latencies) // 2] * 1000,
        latencies[int(len(latencies) * 0.99)] * 1000,
        len(latencies),
        errors,
    )


@dataclass(frozen=True)
class LoadPlan:
    """How to drive the API: connections, seconds measured and the client (auto, wrk, httpx)."""

    connections: int
    duration: int
    client: str = "auto"


def run_load(base: str, holders_file: Path, access: Access, plan: LoadPlan, duration: int) -> Load:
    connections = plan.connections
    if plan.client == "wrk" or (plan.client == "auto" and shutil.which("wrk")):
        return run_wrk(base, holders_file, access, connections, duration)
    if plan.client == "auto":
        print("  note: wrk is not installed (apt-get install -y wrk); using an asyncio client")
    holders = holders_file.read_text().split()
    return asyncio.run(_httpx_load(base, holders, access, connections, duration))


@dataclass
class Result:
    backend: str
    loaded: Loaded
    load: Load
    baseline: Baseline
    access: str


def measure_api(
    url: str, loaded: Loaded, plan: LoadPlan, deployment: Deployment
) -> tuple[Load, str]:
    home = Path(tempfile.mkdtemp(prefix="govx-bench-lookup-"))
    server = Server(url, home)
    try:
        server.wait_ready()
        access = intake_access(url, server.base, deployment)
        try:
            first = loaded.holders_file.read_text().split()[0]
            check_one(server.base, first, access)
            run_load(server.base, loaded.holders_file, access, plan, min(5, plan.duration))
            load = run_load(server.base, loaded.holders_file, access, plan, plan.duration)
        finally:
            access.revoke()
    finally:
        server.stop()
    if load.errors:
        print(f"  {load.errors:,} requests failed; server log: {server.log_path}")
    else:
        shutil.rmtree(home, ignore_errors=True)
    return load, access.note


# -- report -------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(results: list[Result]) -> None:
    print()
    head = (
        f"{'backend':<11}{'licenses':>12}{'load rate':>14}{'API rps':>10}{'p50':>9}{'p99':>9}"
        f"{'raw lookups/s':>15}{'API/raw':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        rate = r.loaded.licenses / r.loaded.load_seconds
        kept = "*" if r.loaded.kept else ""
        print(
            f"{r.backend:<11}{r.loaded.licenses:>12,}{rate:>12,.0f}/s{kept:1}"
            f"{r.load.rps:>9,.0f}{r.load.p50_ms:>7.1f}ms{r.load.p99_ms:>7.1f}ms"
            f"{r.baseline.rate:>15,.0f}{r.load.rps / r.baseline.rate:>8.2f}x"
        )
    print()
    for r in results:
        ratio = r.load.rps / r.baseline.rate
        print(f"{r.backend}: API = {r.load.tool}; {r.access}")
        print(
            f"  {r.load.requests:,} requests, {r.load.errors:,} not 200, "
            f"{r.load.socket_errors:,} socket errors or timeouts (10 s)"
        )
        latency = (
            f", average latency {r.baseline.latency_ms:.2f} ms" if r.baseline.latency_ms else ""
        )
        print(f"  raw baseline = {r.baseline.what}{latency}")
        print(
            f"  targets: {verdict(r.load.rps >= TARGET_RPS)} >= {TARGET_RPS:,} requests/s "
            f"({r.load.rps:,.0f}); {verdict(r.load.p99_ms <= TARGET_P99_MS)} p99 <= "
            f"{TARGET_P99_MS:.0f} ms ({r.load.p99_ms:.1f}); {verdict(ratio >= TARGET_RATIO)} "
            f">= {TARGET_RATIO}x the raw lookup rate ({ratio:.2f}x)"
        )
    if any(r.loaded.kept for r in results):
        print("* load rate of the run that generated the kept data (--regenerate to redo it)")
    one, five, _ = os.getloadavg()
    print(
        f"load average at the end: {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-size", type=int, default=10_000_000)
    parser.add_argument("--sqlite-size", type=int, default=1_000_000)
    parser.add_argument("--duration", type=int, default=30, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--pg-clients", type=int, default=8, help="pgbench clients")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument(
        "--load-client", choices=("auto", "wrk", "httpx"), default="auto", help="auto: wrk if found"
    )
    args = parser.parse_args()
    plan = LoadPlan(args.connections, args.duration, args.load_client)

    deployment = load_deployment(REPO / "config")
    results: list[Result] = []
    if not args.skip_pg:
        loaded = load_postgres(
            args.pg_url, args.pg_size, args.data_dir / "holders-pg.txt", args.regenerate
        )
        print(f"PostgreSQL: {loaded.licenses:,} licenses, warming the sampled holders ...")
        print(f"  warmed in {warm_postgres(args.pg_url):.1f} s; pgbench for {args.duration} s")
        script = pgbench_script(args.data_dir / "lookup.pgbench.sql")
        baseline = run_pgbench(args.pg_url, script, loaded.holders, args.pg_clients, args.duration)
        print(f"  pgbench: {baseline.rate:,.0f} lookups/s; the API for {args.duration} s")
        load, note = measure_api(args.pg_url, loaded, plan, deployment)
        results.append(Result("PostgreSQL", loaded, load, baseline, note))
    if not args.skip_sqlite:
        path = args.data_dir / "licenses-sqlite.db"
        loaded = load_sqlite(
            path, args.sqlite_size, args.data_dir / "holders-sqlite.txt", args.regenerate
        )
        print(f"SQLite: {loaded.licenses:,} licenses; sqlite3 loop for {args.duration} s")
        baseline = run_sqlite_loop(path, loaded.holders_file, args.duration)
        print(f"  loop: {baseline.rate:,.0f} lookups/s; the API for {args.duration} s")
        load, note = measure_api(f"sqlite:///{path}", loaded, plan, deployment)
        results.append(Result("SQLite", loaded, load, baseline, note))
    report(results)


if __name__ == "__main__":
    main()
