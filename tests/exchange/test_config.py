"""Deployment configuration: the sample is valid; every mistake names its file and key path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from exchange.config import ConfigError, load_deployment
from exchange.standards import HolderKind, RegionLevel

SAMPLE = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(SAMPLE, target)
    return target


def edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def problems(directory: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_deployment(directory)
    return info.value.problems


def test_sample_deployment_is_realistic() -> None:
    deployment = load_deployment(SAMPLE)
    levels = {deployment.region_by_code[d.region].level for d in deployment.departments}
    assert levels == {RegionLevel.PROVINCE, RegionLevel.CITY, RegionLevel.COUNTY}
    kinds = {t.holder_kind for t in deployment.license_types}
    assert kinds == {HolderKind.NATURAL, HolderKind.LEGAL}
    assert len(deployment.license_types) >= 6
    assert len(deployment.matters) >= 3
    assert {"440000", "440600", "440604", "440605", "440800", "440802"} <= set(
        deployment.region_by_code
    )
    newborn = next(m for m in deployment.matters if m.name == "新生儿入户登记")
    assert {m.license_type for m in newborn.materials if m.license_type} == {
        "birth_medical_certificate",
        "resident_id_card",
        "household_register",
        "marriage_certificate",
    }


def test_source_lookup_lists_known_sources() -> None:
    deployment = load_deployment(SAMPLE)
    with pytest.raises(KeyError, match="gd_household_registry"):
        deployment.source("nope")


def test_missing_key_names_file_and_path(config_copy: Path) -> None:
    edit(config_copy / "sources.yaml", lambda d: d["sources"][1].pop("primary_key"))
    [problem] = problems(config_copy)
    assert problem == f"{config_copy / 'sources.yaml'}: sources[1].primary_key: Field required"


def test_wrong_type_and_unknown_key(config_copy: Path) -> None:
    def change(data: dict) -> None:
        data["license_types"][0]["holder_kind"] = "robot"
        data["license_types"][2]["colour"] = "red"

    edit(config_copy / "license_types.yaml", change)
    found = problems(config_copy)
    assert any(
        "license_types.yaml: license_types[0].holder_kind: Input should be" in p for p in found
    )
    assert any("license_types[2].colour: Extra inputs are not permitted" in p for p in found)


def test_invalid_department_credit_code(config_copy: Path) -> None:
    edit(
        config_copy / "departments.yaml",
        lambda d: d["departments"][0].update(code="11440000MB2000000A"),
    )
    [problem] = problems(config_copy)
    assert "departments.yaml: departments[0].code: " in problem
    assert "bad check character" in problem


def test_dangling_references(config_copy: Path) -> None:
    edit(
        config_copy / "sources.yaml",
        lambda d: d["sources"][0]["licenses"][0].update(type="passport"),
    )
    edit(
        config_copy / "matters.yaml",
        lambda d: d["matters"][2].update(department="ministry_of_magic"),
    )
    found = problems(config_copy)
    assert (
        f"{config_copy / 'sources.yaml'}: sources[0].licenses[0].type: "
        "unknown license type 'passport'" in found
    )
    assert (
        f"{config_copy / 'matters.yaml'}: matters[2].department: "
        "unknown department 'ministry_of_magic'" in found
    )


def test_unknown_face_field_and_missing_validity_column(config_copy: Path) -> None:
    def change(data: dict) -> None:
        mapping = data["sources"][0]["licenses"][0]
        mapping["face"]["shoe_size"] = "shoe"
        mapping.pop("valid_to")

    edit(config_copy / "sources.yaml", change)
    found = problems(config_copy)
    assert any(
        "sources[0].licenses[0].face: not face fields of resident_id_card: shoe_size" in p
        for p in found
    )
    assert any(
        "sources[0].licenses[0].valid_to: license type resident_id_card takes its validity" in p
        for p in found
    )


def test_duplicate_ids(config_copy: Path) -> None:
    edit(config_copy / "sources.yaml", lambda d: d["sources"].append(dict(d["sources"][0])))
    [problem] = problems(config_copy)
    assert problem.endswith("sources[5].id: duplicate id 'gd_household_registry'")


def test_bad_yaml_gives_line_and_column(config_copy: Path) -> None:
    (config_copy / "matters.yaml").write_text("matters:\n  - code: [unclosed\n", encoding="utf-8")
    [problem] = problems(config_copy)
    assert problem.startswith(f"{config_copy / 'matters.yaml'}: line ")
    assert "invalid YAML" in problem


def test_not_utf8(config_copy: Path) -> None:
    (config_copy / "regions.yaml").write_bytes(
        "regions:\n  - {code: '440000', name: 广东省}\n".encode("gb18030")
    )
    [problem] = problems(config_copy)
    assert "regions.yaml: not UTF-8 text" in problem


def test_section_defined_twice_and_unknown_section(config_copy: Path) -> None:
    (config_copy / "extra.yaml").write_text("regions: []\nwidgets: []\n", encoding="utf-8")
    found = problems(config_copy)
    assert any("regions: section already defined in" in p and "extra.yaml" in p for p in found)
    assert any("extra.yaml: widgets: unknown section" in p for p in found)


def test_missing_directory(tmp_path: Path) -> None:
    [problem] = problems(tmp_path / "nowhere")
    assert "configuration directory not found" in problem


def test_secrets_are_not_accepted_in_yaml(config_copy: Path) -> None:
    edit(
        config_copy / "sources.yaml",
        lambda d: d["sources"][0].update(connection="postgres://u:hunter2pw@h/db"),
    )
    [problem] = problems(config_copy)
    assert "sources[0].connection" in problem
    assert "hunter2pw" not in problem


@pytest.mark.parametrize("schedule", ["0 25 * * *", "every day", "@fortnightly"])
def test_bad_schedules_are_caught_by_config_check(config_copy: Path, schedule: str) -> None:
    edit(config_copy / "sources.yaml", lambda d: d["sources"][2].update(schedule=schedule))
    [problem] = problems(config_copy)
    assert "sources[2].schedule: not a cron expression" in problem


def test_status_column_needs_its_values(config_copy: Path) -> None:
    edit(
        config_copy / "sources.yaml", lambda d: d["sources"][1]["licenses"][0].pop("status_values")
    )
    [problem] = problems(config_copy)
    assert "sources[1].licenses[0]: 'status' needs 'status_values'" in problem


def test_a_key_given_twice_is_an_error(config_copy: Path) -> None:
    text = (config_copy / "regions.yaml").read_text(encoding="utf-8")
    (config_copy / "regions.yaml").write_text(
        text.replace(
            '{code: "440000", name: 广东省}', '{code: "440000", name: 广东省, name: 湖南省}'
        ),
        encoding="utf-8",
    )
    [problem] = problems(config_copy)
    assert "regions.yaml: line 3" in problem and "duplicate key 'name'" in problem


def test_a_folder_named_like_yaml_is_ignored(config_copy: Path) -> None:
    (config_copy / "drafts.yaml").mkdir()
    assert load_deployment(config_copy).sources


def test_every_source_dataset_must_be_catalogued(config_copy: Path) -> None:
    edit(config_copy / "datasets.yaml", lambda d: d["datasets"].pop(0))
    [problem] = problems(config_copy)
    assert "sources[0].dataset: dataset 'household_registry' is not in the catalogue" in problem


def test_quality_monitoring_alerts_and_deletes_are_checked(config_copy: Path) -> None:
    def source_settings(data: dict) -> None:
        source = data["sources"][0]
        source["quality"] = {"max_bad_fraction": 1.5, "expectations": [{"type": "ExpectFoo"}]}
        source["monitoring"] = {"failures_red": 0}
        source["deletes"] = {"snapshot_schedule": "@weekly"}

    edit(config_copy / "sources.yaml", source_settings)
    edit(
        config_copy / "departments.yaml",
        lambda d: d["departments"][0].update(
            alerts={"webhook": "ftp://example", "email": ["not-an-address"]}
        ),
    )
    found = "\n".join(problems(config_copy))
    for expected in (
        "sources[0].quality.max_bad_fraction",
        "sources[0].quality.expectations[0].type",
        "sources[0].monitoring.failures_red",
        "sources[0].deletes: snapshot_schedule needs key_snapshot: true",
        "departments[0].alerts.webhook: an http:// or https:// URL",
        "departments[0].alerts.email: not an e-mail address: 'not-an-address'",
    ):
        assert expected in found, found
