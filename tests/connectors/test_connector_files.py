"""The ``files`` connector on real files in ``tmp_path`` (and an fsspec ``memory://`` folder).

Every file is generated here: CSVs in UTF-8, UTF-8 with BOM, GB18030 and GBK (营业执照 rows), an
``.xlsx`` made with openpyxl (不动产 rows), Parquet and JSON lines; then the bad files a drop folder
really receives: invalid GB18030 bytes, a truncated workbook, an empty file, a missing column, a
malformed JSON line.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from stdnum.cn import uscc

from connectors import files as files_module
from connectors.base import Extraction, ExtractRequest
from connectors.errors import (
    ConnectorOptionError,
    SourceConfigError,
    SourceDataError,
    SourceUnavailable,
    TerminalError,
    TransientError,
)
from connectors.files import (
    PROVENANCE_FILE,
    PROVENANCE_ROW,
    FileOutcome,
    FilesConnector,
    FilesExtraction,
)
from connectors.registry import connector_class

SOURCE_ID = "gd_amr_business_licenses"
COMPANY_COLUMNS = [
    "credit_code",
    "name",
    "legal_rep",
    "address",
    "established_on",
    "reg_status",
    "license_issue_date",
]
COMPANY_NAMES = [
    "广州市天河区华南信息科技有限公司",
    "佛山市南海区狮山镇五金制品厂",
    "佛山市顺德区美的小家电贸易有限公司",
    "湛江市赤坎区海鲜贸易商行",
    "雷州市客路镇甘蔗种植专业合作社",
]
LEGAL_REPS = ["张伟", "刘䶮", "欧阳娜娜", "黄飞鸿", "陈奕迅"]  # 䶮 is in GB18030, not in GBK
ADDRESSES = [
    "广州市天河区天河路385号",
    "佛山市南海区狮山镇科技东路8号",
    "佛山市顺德区北滘镇美的大道6号",
    "湛江市赤坎区海滨大道北128号",
    "雷州市客路镇客路大道3号",
]


def credit_code(i: int) -> str:
    """A valid unified social credit code (GB 32100) of a Guangzhou company."""
    body = f"91440101MA5{i:06d}"
    return body + uscc.calc_check_digit(body)


def companies(count: int, start: int = 0, *, gbk_safe: bool = False) -> list[dict[str, str]]:
    rows = []
    for i in range(start, start + count):
        legal_rep = LEGAL_REPS[i % len(LEGAL_REPS)]
        rows.append(
            {
                "credit_code": credit_code(i),
                "name": COMPANY_NAMES[i % len(COMPANY_NAMES)],
                "legal_rep": "刘岩" if gbk_safe and legal_rep == "刘䶮" else legal_rep,
                "address": ADDRESSES[i % len(ADDRESSES)],
                "established_on": f"20{10 + i % 14:02d}-0{1 + i % 9}-15",
                "reg_status": "存续（在营、开业、在册）" if i % 4 else "注销",
                "license_issue_date": f"2023-0{1 + i % 9}-2{i % 10}",
            }
        )
    return rows


def csv_text(rows: list[dict[str, str]], columns: list[str] | None = None) -> str:
    columns = columns or list(rows[0])
    lines = [",".join(columns)] + [",".join(row[c] for c in columns) for row in rows]
    return "\r\n".join(lines) + "\r\n"


def write_csv(path: Path, rows: list[dict[str, str]], encoding: str = "utf-8") -> bytes:
    data = csv_text(rows).encode(encoding)
    path.write_bytes(data)
    return data


def write_property_xlsx(path: Path) -> None:
    """不动产登记 rows: a title-less sheet with dates, numbers and a blank row in between."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "不动产登记"
    sheet.append(["cert_no", "owner_name", "owner_id", "location", "area_m2", "registered_on"])
    sheet.append(
        [
            "粤(2019)广州市不动产权第0123456号",
            "张三",
            "11010519491231002X",
            "广州市越秀区东风中路300号1201房",
            89.5,
            dt.date(2019, 6, 18),
        ]
    )
    sheet.append([])  # a blank row: skipped, but row numbers still count it
    sheet.append(
        [
            "粤(2020)佛山市不动产权第0654321号",
            "李四",
            "440604198001010011",
            "佛山市禅城区祖庙路18号",
            120,
            dt.datetime(2020, 1, 2, 9, 30),
        ]
    )
    other = workbook.create_sheet("说明")
    other.append(["note"])
    other.append(["本表由市不动产登记中心导出"])
    workbook.save(path)


def request(
    url: str | Path,
    since: Any = None,
    *,
    primary_key: tuple[str, ...] = ("credit_code",),
    request_batch_size: int = 5000,
    **options: Any,
) -> ExtractRequest:
    if isinstance(url, Path):
        url = url.as_uri()
    return ExtractRequest(
        source_id=SOURCE_ID,
        options=options,
        url=url,
        primary_key=primary_key,
        cursor_column=None,
        since=since,
        batch_size=request_batch_size,
    )


def run(req: ExtractRequest) -> tuple[FilesExtraction, pa.Table]:
    extraction = FilesConnector(req).extract()
    table = pa.Table.from_batches(list(extraction), schema=extraction.schema)
    return extraction, table


def outcomes(extraction: FilesExtraction) -> dict[str, FileOutcome]:
    return {outcome.name: outcome for outcome in extraction.files}


def rows_of(table: pa.Table, file_name: str) -> list[dict[str, Any]]:
    return [row for row in table.to_pylist() if row[PROVENANCE_FILE] == file_name]


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    folder = tmp_path / "drop"
    folder.mkdir()
    return folder


# --- registration and reading -------------------------------------------------------------------


def test_files_kind_is_registered() -> None:
    assert connector_class("files") is FilesConnector
    assert FilesConnector.kind == "files"


def test_csv_in_utf8_bom_gb18030_and_gbk(drop: Path) -> None:
    write_csv(drop / "a_utf8.csv", companies(3, 0))
    write_csv(drop / "b_bom.csv", companies(3, 10), "utf-8-sig")
    write_csv(drop / "c_gb18030.csv", companies(5, 20), "gb18030")
    write_csv(drop / "d_gbk.csv", companies(3, 30, gbk_safe=True), "gbk")

    extraction, table = run(request(drop))

    assert isinstance(extraction, Extraction)
    assert extraction.schema.names == [*COMPANY_COLUMNS, PROVENANCE_FILE, PROVENANCE_ROW]
    assert all(f.type == pa.string() for f in extraction.schema if f.name != PROVENANCE_ROW)
    assert extraction.schema.field(PROVENANCE_ROW).type == pa.int64()
    assert table.schema == extraction.schema
    assert extraction.rows_read == table.num_rows == 14
    encodings = {name: o.encoding for name, o in outcomes(extraction).items()}
    assert encodings == {
        "a_utf8.csv": "utf-8",
        "b_bom.csv": "utf-8-sig",
        "c_gb18030.csv": "gb18030",
        "d_gbk.csv": "gb18030",  # GBK is a subset of GB18030
    }
    assert {o.status for o in extraction.files} == {"loaded"}

    gb = rows_of(table, "c_gb18030.csv")
    assert [r[PROVENANCE_ROW] for r in gb] == [2, 3, 4, 5, 6]  # line 1 is the header
    expected = companies(5, 20)
    assert [{c: r[c] for c in COMPANY_COLUMNS} for r in gb] == expected
    assert any(r["legal_rep"] == "刘䶮" for r in gb)
    bom = rows_of(table, "b_bom.csv")
    assert bom[0]["credit_code"] == credit_code(10)  # the BOM did not stick to the first column
    assert rows_of(table, "d_gbk.csv")[0]["name"] == COMPANY_NAMES[0]
    assert rows_of(table, "a_utf8.csv")[2]["reg_status"] == "存续（在营、开业、在册）"


def test_csv_options_delimiter_header_line_and_multiline_values(drop: Path) -> None:
    text = (
        "广东省市场监督管理局 企业登记信息导出\n"
        "导出日期;2024-03-01\n"
        "\n"
        "credit_code;name;address\n"
        f'{credit_code(1)};"华南""一号""科技有限公司";"广州市天河区\n天河路385号"\n'
        "\n"
        f"{credit_code(2)};;佛山市禅城区祖庙路18号\n"
        f"{credit_code(3)};湛江市赤坎区海鲜贸易商行\n"  # a short row: padded with null
    )
    (drop / "export.csv").write_bytes(text.encode("gb18030"))

    extraction, table = run(request(drop, csv={"delimiter": ";", "header": 3}))

    rows = table.to_pylist()
    assert [r[PROVENANCE_ROW] for r in rows] == [5, 8, 9]
    assert rows[0]["name"] == '华南"一号"科技有限公司'
    assert rows[0]["address"] == "广州市天河区\n天河路385号"
    assert rows[1]["name"] is None  # empty is null
    assert rows[2]["address"] is None
    assert outcomes(extraction)["export.csv"].rows == 3


def test_xlsx_rows_keep_sheet_row_numbers_and_become_text(drop: Path) -> None:
    write_property_xlsx(drop / "不动产登记_2024Q1.xlsx")

    extraction, table = run(request(drop, primary_key=("cert_no",)))

    rows = table.to_pylist()
    assert [r[PROVENANCE_ROW] for r in rows] == [2, 4]
    assert rows[0] == {
        "cert_no": "粤(2019)广州市不动产权第0123456号",
        "owner_name": "张三",
        "owner_id": "11010519491231002X",
        "location": "广州市越秀区东风中路300号1201房",
        "area_m2": "89.5",
        "registered_on": "2019-06-18",
        PROVENANCE_FILE: "不动产登记_2024Q1.xlsx",
        PROVENANCE_ROW: 2,
    }
    assert rows[1]["area_m2"] == "120"
    assert rows[1]["registered_on"] == "2020-01-02 09:30:00"
    assert outcomes(extraction)["不动产登记_2024Q1.xlsx"].status == "loaded"

    by_name = run(request(drop, primary_key=("note",), sheet="说明"))[1]
    by_index = run(request(drop, primary_key=("note",), sheet=1))[1]
    assert by_name.column("note").to_pylist() == ["本表由市不动产登记中心导出"]
    assert by_index.column("note").to_pylist() == by_name.column("note").to_pylist()
    missing = run(request(drop, primary_key=("note",), sheet="附表"))[0].files[0]
    assert missing.status == "rejected"
    assert "no sheet '附表'" in (missing.reason or "")


def test_parquet_and_jsonl_values_become_text(drop: Path) -> None:
    parquet = pa.table(
        {
            "credit_code": [credit_code(1), credit_code(2)],
            "registered_capital": pa.array([5_000_000, None], pa.int64()),
            "established_on": pa.array([dt.date(2016, 3, 1), dt.date(2018, 7, 9)]),
            "listed": [True, False],
            "shareholders": [["张伟", "李娜"], []],
        }
    )
    pq.write_table(parquet, drop / "companies.parquet")
    lines = [
        {"credit_code": credit_code(3), "name": "湛江市赤坎区海鲜贸易商行", "capital": 300000},
        {"credit_code": credit_code(4), "capital": 12.5, "listed": False, "tags": {"行业": "渔业"}},
    ]
    jsonl = json.dumps(lines[0], ensure_ascii=False) + "\n\n" + json.dumps(lines[1]) + "\n"
    (drop / "companies.jsonl").write_text(jsonl, encoding="utf-8")

    extraction, table = run(request(drop))

    assert extraction.schema.names == [
        "credit_code",
        "name",
        "capital",
        "listed",
        "tags",
        "registered_capital",
        "established_on",
        "shareholders",
        PROVENANCE_FILE,
        PROVENANCE_ROW,
    ]
    from_parquet = rows_of(table, "companies.parquet")
    assert [r[PROVENANCE_ROW] for r in from_parquet] == [1, 2]
    assert from_parquet[0]["registered_capital"] == "5000000"
    assert from_parquet[1]["registered_capital"] is None
    assert from_parquet[0]["established_on"] == "2016-03-01"
    assert from_parquet[0]["listed"] == "true"
    assert json.loads(from_parquet[0]["shareholders"]) == ["张伟", "李娜"]
    assert from_parquet[0]["name"] is None  # a column only the JSON lines file has
    from_jsonl = rows_of(table, "companies.jsonl")
    assert [r[PROVENANCE_ROW] for r in from_jsonl] == [1, 3]  # the blank line 2 is skipped
    assert from_jsonl[0]["capital"] == "300000"
    assert from_jsonl[0]["listed"] is None
    assert from_jsonl[1]["capital"] == "12.5"
    assert from_jsonl[1]["listed"] == "false"
    assert json.loads(from_jsonl[1]["tags"]) == {"行业": "渔业"}
    assert from_jsonl[0]["name"] == "湛江市赤坎区海鲜贸易商行"


def test_columns_contract_orders_the_schema_and_keeps_extras(drop: Path) -> None:
    rows = companies(2)
    for row in rows:
        row["remark"] = "年报已公示"
    (drop / "with_extra.csv").write_text(csv_text(rows), encoding="utf-8")
    write_csv(drop / "plain.csv", companies(2, 5))

    extraction, table = run(request(drop, columns=["name", "credit_code"]))

    assert extraction.schema.names[:2] == ["name", "credit_code"]
    assert "remark" in extraction.schema.names
    found = outcomes(extraction)
    assert found["with_extra.csv"].status == "loaded"
    assert "extra column(s) kept" in (found["with_extra.csv"].reason or "")
    assert "remark" in (found["with_extra.csv"].reason or "")
    assert [r["remark"] for r in rows_of(table, "plain.csv")] == [None, None]


def test_batches_respect_batch_size(drop: Path) -> None:
    write_csv(drop / "big.csv", companies(23))
    extraction = FilesConnector(request(drop, request_batch_size=10)).extract()
    sizes = [batch.num_rows for batch in extraction]
    assert sizes == [10, 10, 3]
    extraction = FilesConnector(request(drop, request_batch_size=10, batch_size=4)).extract()
    assert [batch.num_rows for batch in extraction] == [4, 4, 4, 4, 4, 3]


# --- exactly once -------------------------------------------------------------------------------


def test_second_run_with_the_cursor_reads_nothing(drop: Path) -> None:
    write_csv(drop / "a.csv", companies(3))
    write_csv(drop / "b.csv", companies(2, 3), "gb18030")

    first, table = run(request(drop))
    assert table.num_rows == 5
    cursor = first.cursor_after
    assert cursor == sorted(o.sha256 for o in first.files)
    assert json.loads(json.dumps(cursor)) == cursor

    second, table = run(request(drop, since=cursor))
    assert table.num_rows == 0
    assert second.rows_read == 0
    assert second.cursor_after == cursor
    assert {o.status for o in second.files} == {"skipped_seen"}
    assert second.schema.names == [PROVENANCE_FILE, PROVENANCE_ROW]  # known, even empty


def test_renamed_file_is_skipped_and_changed_file_loads(drop: Path) -> None:
    write_csv(drop / "2024-03-01.csv", companies(3))
    cursor = run(request(drop))[0].cursor_after

    (drop / "2024-03-01.csv").rename(drop / "2024-03-01 (1).csv")
    renamed, table = run(request(drop, since=cursor))
    assert table.num_rows == 0
    assert outcomes(renamed)["2024-03-01 (1).csv"].status == "skipped_seen"
    assert renamed.cursor_after == cursor

    write_csv(drop / "2024-03-01 (1).csv", companies(4))  # one more row: new content
    changed, table = run(request(drop, since=cursor))
    assert table.num_rows == 4
    assert outcomes(changed)["2024-03-01 (1).csv"].status == "loaded"
    assert set(cursor) < set(changed.cursor_after)
    assert changed.cursor_after == sorted(changed.cursor_after)


def test_identical_files_in_one_run_load_once(drop: Path) -> None:
    write_csv(drop / "a.csv", companies(3))
    write_csv(drop / "copy of a.csv", companies(3))

    extraction, table = run(request(drop))

    assert table.num_rows == 3
    found = outcomes(extraction)
    assert found["a.csv"].status == "loaded"
    assert found["copy of a.csv"].status == "skipped_seen"
    assert "same content as 'a.csv'" in (found["copy of a.csv"].reason or "")
    assert len(extraction.cursor_after) == 1


def test_a_dict_cursor_is_accepted_and_extended(drop: Path) -> None:
    write_csv(drop / "old.csv", companies(1))
    old_hash = run(request(drop))[0].cursor_after[0]
    write_csv(drop / "new.csv", companies(1, 1))

    extraction, table = run(request(drop, since={old_hash: "old.csv"}))

    assert table.num_rows == 1
    cursor = extraction.cursor_after
    assert isinstance(cursor, dict)
    assert cursor[old_hash] == "old.csv"
    assert sorted(cursor.values()) == ["new.csv", "old.csv"]


def test_an_unread_extraction_does_not_advance_the_cursor(drop: Path) -> None:
    write_csv(drop / "a.csv", companies(3))
    extraction = FilesConnector(request(drop, since=[])).extract()
    assert extraction.cursor_after == []  # nothing yielded yet
    assert extraction.files == []  # a new file has no outcome before it is read
    assert len(list(extraction)) == 1
    assert len(extraction.cursor_after) == 1
    with pytest.raises(RuntimeError, match="read once"):
        list(extraction)


# --- bad files: rejected one by one, the good ones still load ------------------------------------


def test_bad_files_are_rejected_and_good_files_still_load(drop: Path) -> None:
    good = companies(4)
    write_csv(drop / "good.csv", good, "gb18030")
    gb = csv_text(companies(4, 10)).encode("gb18030")
    bad_at = gb.index("湛江".encode("gb18030"))
    (drop / "bad_bytes.csv").write_bytes(gb[:bad_at] + b"\xff" + gb[bad_at:])
    write_property_xlsx(drop / "truncated.xlsx")
    whole = (drop / "truncated.xlsx").read_bytes()
    (drop / "truncated.xlsx").write_bytes(whole[: len(whole) // 2])
    (drop / "empty.csv").write_bytes(b"")
    no_rep = [{k: v for k, v in row.items() if k != "legal_rep"} for row in companies(2, 20)]
    (drop / "no_legal_rep.csv").write_text(csv_text(no_rep), encoding="utf-8")
    lines = [json.dumps(row, ensure_ascii=False) for row in companies(3, 30)]
    lines[2] = lines[2][:-1]  # line 3 loses its closing brace
    (drop / "broken.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    extraction, table = run(request(drop, columns=COMPANY_COLUMNS))

    found = outcomes(extraction)
    assert set(found) == {
        "good.csv",
        "bad_bytes.csv",
        "truncated.xlsx",
        "empty.csv",
        "no_legal_rep.csv",
        "broken.jsonl",
    }
    assert found["good.csv"].status == "loaded"
    assert found["good.csv"].rows == 4
    assert [r["credit_code"] for r in table.to_pylist()] == [row["credit_code"] for row in good]
    rejected = {name: o.reason or "" for name, o in found.items() if o.status == "rejected"}
    assert set(rejected) == set(found) - {"good.csv"}
    assert "unreadable encoding" in rejected["bad_bytes.csv"]
    assert f"GB18030 (first bad byte at offset {bad_at})" in rejected["bad_bytes.csv"]
    assert "not a valid .xlsx file" in rejected["truncated.xlsx"]
    assert "empty" in rejected["empty.csv"]
    assert rejected["no_legal_rep.csv"] == "missing required column(s): legal_rep"
    assert rejected["broken.jsonl"].startswith("line 3 is not valid JSON")
    for reason in rejected.values():  # reasons never quote a value (ID numbers...)
        assert not any(credit_code(i) in reason for i in range(40))
        assert "张伟" not in reason

    cursor = extraction.cursor_after
    assert cursor == [found["good.csv"].sha256]
    assert all(found[name].sha256 not in cursor for name in rejected)

    # the department fixes the JSON lines file; the unchanged bad files are rejected again
    lines[2] += "}"
    (drop / "broken.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    again, table = run(request(drop, since=cursor, columns=COMPANY_COLUMNS))
    found = outcomes(again)
    assert found["broken.jsonl"].status == "loaded"
    assert table.num_rows == 3
    assert found["good.csv"].status == "skipped_seen"
    assert found["bad_bytes.csv"].status == "rejected"
    assert found["truncated.xlsx"].status == "rejected"
    assert len(again.cursor_after) == 2


def test_a_file_rejected_half_way_yields_no_rows(drop: Path) -> None:
    rows = companies(7)
    text = csv_text(rows).splitlines()
    text[5] += ",多出来的一列"  # line 6: a value beyond the header
    (drop / "ragged.csv").write_text("\n".join(text) + "\n", encoding="utf-8")
    write_csv(drop / "ok.csv", companies(2, 100))

    extraction, table = run(request(drop, batch_size=2))

    assert set(table.column(PROVENANCE_FILE).to_pylist()) == {"ok.csv"}
    ragged = outcomes(extraction)["ragged.csv"]
    assert ragged.status == "rejected"
    assert ragged.reason == "line 6 has a value in column 8, which has no header"
    assert extraction.cursor_after == [outcomes(extraction)["ok.csv"].sha256]


def test_other_files_the_folder_receives(drop: Path) -> None:
    write_csv(drop / "ok.csv", companies(1))
    (drop / "~$登记表.xlsx").write_bytes(b"excel lock file")
    (drop / ".upload.tmp").write_bytes(b"partial")
    (drop / "旧格式.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    (drop / "README").write_text("说明", encoding="utf-8")
    (drop / "provenance.csv").write_text("credit_code,_govx_row\nx,1\n", encoding="utf-8")
    (drop / "twice.csv").write_text("credit_code,name,name\nx,y,z\n", encoding="utf-8")

    found = outcomes(run(request(drop))[0])

    assert set(found) == {"ok.csv", "旧格式.xls", "README", "provenance.csv", "twice.csv"}
    assert "save it as .xlsx" in (found["旧格式.xls"].reason or "")
    assert "set the 'format' option" in (found["README"].reason or "")
    assert "reserved" in (found["provenance.csv"].reason or "")
    assert "'name' appears more than once" in (found["twice.csv"].reason or "")
    only_csv = outcomes(run(request(drop, pattern="ok*.csv"))[0])
    assert set(only_csv) == {"ok.csv"}


def test_an_explicit_encoding_is_used_and_checked(drop: Path) -> None:
    big5 = "credit_code,name\n" + f"{credit_code(1)},澳門新濠天地有限公司\n"
    (drop / "macao.csv").write_bytes(big5.encode("big5hkscs"))

    extraction, table = run(request(drop, encoding="big5hkscs"))
    assert table.column("name").to_pylist() == ["澳門新濠天地有限公司"]
    assert extraction.files[0].encoding == "big5hkscs"

    (drop / "macao.csv").write_bytes(b"credit_code,name\nx,\x80\x80\n")
    rejected = run(request(drop, encoding="big5hkscs"))[0].files[0]
    assert rejected.status == "rejected"
    assert (
        rejected.reason == "unreadable encoding: not valid big5hkscs (first bad byte at offset 19)"
    )


# --- other filesystems and whole-source errors ----------------------------------------------------


@pytest.fixture
def memory_folder() -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    root = f"/govx-test-{uuid.uuid4().hex}/drop"
    yield root
    if fs.exists(root):
        fs.rm(root.rsplit("/", 1)[0], recursive=True)


def test_a_memory_folder_works(memory_folder: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{memory_folder}/a.csv", csv_text(companies(2)).encode("gb18030"))
    fs.pipe(f"{memory_folder}/sub/b.csv", csv_text(companies(1, 5)).encode("utf-8"))
    url = f"memory://{memory_folder}"

    first, table = run(request(url))
    assert table.column(PROVENANCE_FILE).to_pylist() == ["a.csv", "a.csv"]
    assert table.column("name").to_pylist() == COMPANY_NAMES[:2]

    nested = run(request(url, pattern="**/*.csv"))[1]
    assert "sub/b.csv" in nested.column(PROVENANCE_FILE).to_pylist()

    table = run(request(url, since=first.cursor_after))[1]
    assert table.num_rows == 0
    assert fs.exists(f"{memory_folder}/a.csv")  # the connector never moves or deletes a file


def test_a_missing_folder_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(SourceConfigError, match="does not exist") as caught:
        FilesConnector(request(tmp_path / "nowhere")).extract()
    assert isinstance(caught.value, TerminalError)
    (tmp_path / "a_file").write_text("x", encoding="utf-8")
    with pytest.raises(SourceConfigError, match="is a file, not a folder"):
        FilesConnector(request(tmp_path / "a_file")).extract()
    with pytest.raises(SourceConfigError, match="not a folder URL"):
        FilesConnector(request("nosuchprotocol://x/y")).extract()


def test_a_network_filesystem_error_is_transient(
    drop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FlakyFileSystem(fsspec.implementations.local.LocalFileSystem):
        def isdir(self, path: str) -> bool:
            raise TimeoutError("the SMB server did not answer")

    monkeypatch.setattr(
        files_module.fsspec.core, "url_to_fs", lambda url: (FlakyFileSystem(), str(drop))
    )
    with pytest.raises(SourceUnavailable, match="cannot read the folder") as caught:
        FilesConnector(request(drop)).extract()
    assert isinstance(caught.value, TransientError)


@pytest.mark.parametrize(
    ("options", "option", "message"),
    [
        ({"patern": "*.csv"}, "patern", "unknown option"),
        ({"format": "xls"}, "format", "Input should be"),
        ({"encoding": "klingon"}, "encoding", "unknown encoding 'klingon'"),
        ({"csv": {"delimiter": ";;"}}, "csv.delimiter", "at most 1 character"),
        ({"csv": {"header": 0}}, "csv.header", "greater than or equal to 1"),
        ({"columns": ["a", "a"]}, "columns", "'a' is listed twice"),
        ({"columns": ["_govx_file"]}, "columns", "provenance column"),
        ({"pattern": "../*.csv"}, "pattern", "relative to the folder"),
        ({"batch_size": 0}, "batch_size", "greater than 0"),
    ],
)
def test_bad_options(drop: Path, options: dict[str, Any], option: str, message: str) -> None:
    with pytest.raises(ConnectorOptionError, match=message) as caught:
        FilesConnector(request(drop, **options))
    assert caught.value.option == option


@pytest.mark.parametrize("since", ["2024-03-01", [1, 2], ["not-a-hash"]])
def test_a_saved_cursor_that_is_not_a_hash_list(drop: Path, since: Any) -> None:
    with pytest.raises(SourceDataError, match="SHA-256"):
        FilesConnector(request(drop, since=since))
