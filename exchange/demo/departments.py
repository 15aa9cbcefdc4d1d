"""What each of the five demo department systems holds: their rows, built from one population.

=============================  =====================  ========================================
source (config/sources.yaml)   table                  department
=============================  =====================  ========================================
gd_household_registry          persons                广东省公安厅 (户籍, 居民身份证)
foshan_marriage_registry       marriages              佛山市民政局 (婚姻登记)
chancheng_birth_certificates   birth_records          佛山市禅城区卫生健康局 (出生医学证明)
gd_business_registry           enterprises            广东省市场监督管理局 (商事登记)
nanhai_real_estate             property_rights        佛山市南海区自然资源局 (不动产登记)
=============================  =====================  ========================================

The rows are consistent across systems the way real ones are: spouses in ``marriages`` and
parents in ``birth_records`` are persons of the household registry, a registered baby lives in
its parents' household, legal representatives and property owners are residents. Like a real
department's data they also hold a few dirty rows (see :func:`build_department_rows`).
A long-term (长期) resident ID card, issued at 46 or older, has ``card_valid_to`` NULL.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable
from typing import Any

from stdnum.cn import ric, uscc

from exchange.demo.people import (
    AS_OF_DATE,
    RESIDENCE_REGIONS,
    Birth,
    Couple,
    Person,
    Population,
    ResidenceRegion,
    age_on,
    county_name,
    generate_population,
    random_day,
    region_by_code,
    region_code_valid,
    stamp_after,
)

__all__ = [
    "CREDIT_CODE_ALPHABET",
    "DIRTY_ENTERPRISE_IDS",
    "DIRTY_PERSON_IDS",
    "HOSPITALS",
    "birth_cert_no",
    "build_department_rows",
    "credit_code",
    "enterprise_row",
    "marriage_office",
    "pick_hospital",
    "property_cert_no",
    "property_parcel",
]

Row = dict[str, Any]
DIRTY_PERSON_IDS = (7, 33, 61, 97)
"""``persons`` rows whose resident ID is invalid: a wrong check character (the first three) and
an impossible birth date (the last). Fixed for every seed and size (``persons`` >= 100)."""
DIRTY_ENTERPRISE_IDS = (13,)
"""``enterprises`` rows whose credit code has a wrong check character."""
MIN_ENTERPRISES = 20
MIN_PROPERTY_RIGHTS = 10
CREDIT_CODE_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
UNIFIED_REGISTRATION = dt.date(2016, 1, 4)
"""Foshan issued its first 不动产权证书 (unified real-estate registration) on this day."""
THREE_IN_ONE = dt.date(2015, 10, 1)
"""三证合一: business licenses carry a unified social credit code from this day."""
_APPROVAL_NOTE = "（依法须经批准的项目，经相关部门批准后方可开展经营活动）"


# --- household registry --------------------------------------------------------------------------


def person_row(person: Person) -> Row:
    return {
        "person_id": person.person_id,
        "id_number": person.id_number,
        "name": person.name,
        "gender": person.gender,
        "ethnicity": person.ethnicity,
        "birth_date": person.birth_date,
        "address": person.address,
        "household_no": person.household_no,
        "relation": person.relation,
        "register_no": person.register_no,
        "registered_on": person.registered_on,
        "household_status": person.household_status,
        "card_issue_date": person.card_issue_date,
        "card_valid_from": person.card_issue_date,
        "card_valid_to": person.card_valid_to,
        "card_authority": person.region.card_authority,
        "updated_at": person.updated_at,
    }


def _corrupt_check_character(rng: random.Random, number: str, alphabet: str) -> str:
    wrong = rng.choice([c for c in alphabet if c != number[-1]])
    return number[:-1] + wrong


def _impossible_birth_date(number: str) -> str:
    """The same ID with a calendar date that does not exist (e.g. 0230, 0431 or month 13)."""
    month = int(number[10:12])
    day = {2: "30", 4: "31", 6: "31", 9: "31", 11: "31"}.get(month)
    date_part = f"{number[10:12]}{day}" if day else f"13{number[12:14]}"
    body = number[:10] + date_part + number[14:17]
    return body + ric.calc_check_digit(body + "0")


# --- marriages -----------------------------------------------------------------------------------


def marriage_office(rng: random.Random, region: ResidenceRegion, year: int) -> tuple[str, str]:
    """Region code and name of the marriage registration office of ``region`` in ``year``.

    Before 2002 禅城/南海/顺德 were 城区 or 石湾区, 南海市/县 and 顺德市/县; before any county
    code existed the city's own office registered the marriage.
    """
    codes = [c for c in region.id_codes if region_code_valid(c, year)]
    code = rng.choice(codes) if codes else region.city_code
    name = county_name(code, year)
    if code == region.city_code:
        office = f"{region.city}民政局婚姻登记处"
    elif name.endswith(("市", "县")):
        office = f"{name}民政局婚姻登记处"
    else:
        office = f"{region.city}{name}民政局婚姻登记处"
    return code, office


def _marriage_rows(rng: random.Random, couples: Iterable[Couple]) -> list[Row]:
    registered = sorted(
        (c for c in couples if c.registered_in_foshan),
        key=lambda c: (c.married_on, c.husband.person_id),
    )
    serials: dict[tuple[str, int], int] = {}
    rows: list[Row] = []
    for number, couple in enumerate(registered, start=1):
        year = couple.married_on.year
        code, office = marriage_office(rng, couple.region, year)
        key = (code, year)
        serials[key] = serials.get(key, rng.randint(1, 400)) + rng.randint(1, 25)
        rows.append(
            {
                "marriage_id": number,
                "cert_no": f"J{code}-{year}-{serials[key]:06d}",
                "husband_id": couple.husband.id_number,
                "husband_name": couple.husband.name,
                "wife_id": couple.wife.id_number,
                "wife_name": couple.wife.name,
                "register_date": couple.married_on,
                "register_office": office,
                "marital_status": couple.status,
                "updated_at": stamp_after(rng, couple.divorced_on or couple.married_on),
            }
        )
    return rows


# --- birth certificates --------------------------------------------------------------------------

HOSPITALS = (
    ("佛山市妇幼保健院", 30),
    ("佛山市第一人民医院", 25),
    ("佛山市禅城区中心医院", 13),
    ("佛山市第二人民医院", 12),
    ("佛山市中医院", 10),
    ("佛山复星禅诚医院", 10),
)


def pick_hospital(rng: random.Random) -> str:
    """A maternity hospital in 禅城区, weighted by how many births it sees."""
    return rng.choices([h for h, _ in HOSPITALS], [w for _, w in HOSPITALS])[0]


def birth_cert_no(rng: random.Random, year: int, taken: set[str]) -> str:
    """An 出生医学证明 number: the edition letter of its year, then 9 digits (``Q440123456``)."""
    letter = "KLMNOPQRST"[min(max(year - 2005, 0) // 2, 9)]
    while True:
        number = f"{letter}44{rng.randrange(0, 10_000_000):07d}"
        if number not in taken:
            taken.add(number)
            return number


def birth_row(rng: random.Random, birth: Birth, record_id: int, taken: set[str]) -> Row:
    mother, father = birth.couple.wife, birth.couple.husband
    issue = min(birth.birth_date + dt.timedelta(days=rng.randint(1, 20)), AS_OF_DATE)
    return {
        "record_id": record_id,
        "cert_no": birth_cert_no(rng, issue.year, taken),
        "baby_name": birth.baby_name,
        "baby_gender": birth.baby_gender,
        "birth_date": birth.birth_date,
        "birth_place": pick_hospital(rng),
        "mother_id": mother.id_number,
        "mother_name": mother.name,
        "father_id": father.id_number,
        "father_name": father.name,
        "issue_date": issue,
        "updated_at": stamp_after(rng, issue, lag_days=3),
    }


def _birth_rows(rng: random.Random, population: Population) -> list[Row]:
    births = sorted(
        (b for b in population.births if b.in_chancheng_hospital and b.couple.registered_in_foshan),
        key=lambda b: (b.birth_date, b.couple.wife.person_id, b.baby_name),
    )
    taken: set[str] = set()
    rows = []
    for record_id, birth in enumerate(births, start=1):
        row = birth_row(rng, birth, record_id, taken)
        if birth is population.sample_birth:
            row.update(
                birth_place="佛山市妇幼保健院",
                issue_date=dt.date(2024, 12, 20),
                updated_at=dt.datetime(2024, 12, 20, 10, 12, 5),
            )
        rows.append(row)
    return rows


# --- enterprises ---------------------------------------------------------------------------------

_ZIHAO = (
    "宏华盛鑫源恒通佳美锐粤海金峰顺发嘉明辉汇丰永利创新东博雅瑞祥锦程富天成泰信达隆兴昌荣德安"
    "晟骏翔凯卓越星辰鸿鹏乐康怡和韵"
)
_INDUSTRIES = (
    ("贸易", "销售：日用百货、五金交电、建筑材料、电子产品；货物进出口；技术进出口。"),
    ("科技", "软件开发；信息系统集成服务；信息技术咨询服务；计算机软硬件及辅助设备零售。"),
    ("陶瓷", "研发、生产、销售：建筑陶瓷制品、卫生陶瓷制品；货物进出口。"),
    ("家具", "生产、销售：家具、木制品；室内装饰设计；货物进出口。"),
    ("五金制品", "加工、销售：五金制品、金属制品、不锈钢制品。"),
    ("餐饮管理", "餐饮管理；餐饮服务；食品销售。"),
    ("物业管理", "物业管理；停车场服务；家政服务；园林绿化工程施工。"),
    ("建材", "销售：建筑材料、装饰材料、陶瓷制品、卫生洁具。"),
    ("服装", "设计、加工、销售：服装、鞋帽、针纺织品。"),
    ("电器", "研发、生产、销售：家用电器、电子元器件；货物进出口。"),
    ("物流", "普通货物道路运输；仓储服务（不含危险化学品）；国内货运代理。"),
    ("装饰工程", "建筑装饰装修工程施工；室内装饰设计；建筑材料销售。"),
    ("机械设备", "生产、销售：通用机械设备、机械配件；机械设备租赁。"),
    ("文化传播", "组织文化艺术交流活动；广告设计、制作、代理、发布；会议及展览服务。"),
    ("铝业", "生产、销售：铝型材、铝制品、金属门窗。"),
)
_SHOPS = (
    ("小食店", "餐饮服务（小型餐馆）。"),
    ("五金店", "零售：五金交电、日用百货。"),
    ("便利店", "零售：预包装食品、日用百货。"),
    ("理发店", "理发服务。"),
    ("服装店", "零售：服装、鞋帽。"),
    ("家电维修部", "家用电器维修；通讯设备维修。"),
    ("粥粉面店", "餐饮服务（小型餐馆）。"),
)
_COOPERATIVES = (
    ("水果种植", "组织成员种植、销售水果；为成员提供农业生产技术服务。"),
    ("水产养殖", "组织成员开展水产养殖；收购、销售成员的水产品。"),
    ("蔬菜种植", "组织成员种植、销售蔬菜；为成员提供农资采购服务。"),
)
_PREMISES = ("", "首层之一", "201室", "1座1203室", "A栋3楼", "之三", "首层铺位", "B座808室")


def _gb11714_check(body: str) -> str:
    """Check character of an organisation code (GB 11714), the 9 characters inside a USCC."""
    weights = (3, 7, 9, 10, 5, 8, 4, 2)
    values = (int(c) if c.isdigit() else ord(c) - 55 for c in body)  # A=10 ... Z=35
    total = sum(v * w for v, w in zip(values, weights, strict=True))
    check = 11 - total % 11
    return "0" if check == 11 else "X" if check == 10 else str(check)


def credit_code(rng: random.Random, kind: str, region_code: str, established: dt.date) -> str:
    """A unified social credit code (GB 32100) with valid check characters.

    ``kind`` is the registration-type digit (1 company, 2 individual business, 3 farmers'
    cooperative). Entities registered after 三证合一 get an ``MA…`` organisation code; older
    ones keep their 8-digit one. Both carry their GB 11714 check character.
    """
    if established >= THREE_IN_ONE:
        body = "MA" + rng.choice("45") + "".join(rng.choices(CREDIT_CODE_ALPHABET, k=5))
    else:
        body = f"{rng.randrange(10_000_000, 100_000_000)}"
    prefix = f"9{kind}{region_code}{body}{_gb11714_check(body)}"
    return prefix + uscc.calc_check_digit(prefix)


def enterprise_row(
    rng: random.Random,
    ent_id: int,
    region: ResidenceRegion,
    established: dt.date,
    legal_rep: str,
    taken_codes: set[str],
    taken_names: set[str],
    *,
    as_of: dt.date = AS_OF_DATE,
    kind: str | None = None,
    active: bool = False,
) -> Row:
    """One enterprise, individual business or cooperative, with a unique name and credit code.

    ``kind`` is the credit code's registration-type digit (drawn when not given); an ``active``
    one is 存续. License and status dates fall between ``established`` and ``as_of``.
    """
    kind = kind or rng.choices("123", weights=(80, 15, 5))[0]
    while True:
        zihao = "".join(rng.sample(_ZIHAO, 2))
        if kind == "1":
            industry, scope = rng.choice(_INDUSTRIES)
            prefix = region.place if rng.random() < 0.65 else region.place[:3]
            name = f"{prefix}{zihao}{industry}有限公司"
            capital = rng.choice((10, 30, 50, 100, 100, 200, 300, 500, 1000, 3000))
            scope += _APPROVAL_NOTE
        elif kind == "2":
            shop, scope = rng.choice(_SHOPS)
            brand = legal_rep[0] + "记" if rng.random() < 0.4 else zihao
            name = f"{region.place}{brand}{shop}"
            capital = rng.choice((1, 2, 3, 5, 10))
        else:
            product, scope = rng.choice(_COOPERATIVES)
            name = f"{region.place}{zihao}{product}专业合作社"
            capital = rng.choice((20, 50, 100, 200))
        if name not in taken_names:
            taken_names.add(name)
            break
    while (code := credit_code(rng, kind, region.code, established)) in taken_codes:
        pass
    taken_codes.add(code)
    if established >= THREE_IN_ONE:
        issued = established + dt.timedelta(days=rng.randint(0, 5))
    else:
        issued = random_day(rng, THREE_IN_ONE, dt.date(2017, 12, 31))
    if rng.random() < 0.25:  # a later change (address, capital, scope) re-issued the license
        issued = random_day(rng, issued, as_of)
    issued = min(issued, as_of)
    status, changed = "存续", issued
    roll = rng.random()
    if roll < 0.12 and issued + dt.timedelta(days=90) < as_of and not active:
        status = "注销" if roll < 0.08 else "吊销"
        changed = random_day(rng, issued + dt.timedelta(days=90), as_of)
    road, street = rng.choice(region.roads), rng.choice(region.streets)
    return {
        "ent_id": ent_id,
        "credit_code": code,
        "name": name,
        "legal_rep": legal_rep,
        "registered_capital": f"{capital}万元人民币",
        "address": f"{region.place}{street}{road}{rng.randint(1, 399)}号{rng.choice(_PREMISES)}",
        "established_on": established,
        "business_scope": scope,
        "reg_status": status,
        "license_issue_date": issued,
        "updated_at": stamp_after(rng, max(changed, issued)),
    }


class _ResidentPool:
    """Residents who can act as legal representatives or owners, by city."""

    def __init__(self, persons: Iterable[Person]) -> None:
        self.all = [p for p in persons if p.household_status == "正常" and p.age() >= 18]
        self.by_city: dict[str, list[Person]] = {}
        for person in self.all:
            self.by_city.setdefault(person.region.city_code, []).append(person)

    def pick(
        self, rng: random.Random, city_code: str | None, day: dt.date, ages: tuple[int, int]
    ) -> Person:
        pool = self.by_city.get(city_code, self.all) if city_code else self.all
        for _ in range(50):
            person = rng.choice(pool)
            if ages[0] <= age_on(person.birth_date, day) <= ages[1]:
                return person
        return rng.choice([p for p in self.all if age_on(p.birth_date, day) >= ages[0]])


def _enterprise_rows(
    rng: random.Random, count: int, residents: _ResidentPool, sample_family: list[Person]
) -> list[Row]:
    weights = [r.weight for r in RESIDENCE_REGIONS]
    drafts = []
    for _ in range(count):
        year = round(rng.triangular(1993, 2024, 2021))
        established = random_day(rng, dt.date(year, 1, 1), min(dt.date(year, 12, 31), AS_OF_DATE))
        drafts.append((established, rng.choices(RESIDENCE_REGIONS, weights)[0]))
    drafts.sort(key=lambda d: d[0])
    codes: set[str] = set()
    names: set[str] = set()
    rows = []
    for ent_id, (established, region) in enumerate(drafts, start=1):
        rep = residents.pick(rng, region.city_code, established, (20, 65))
        if ent_id in DIRTY_ENTERPRISE_IDS:  # an ordinary, active company
            while any(rep is member for member in sample_family):
                rep = residents.pick(rng, region.city_code, established, (20, 65))
            row = enterprise_row(
                rng, ent_id, region, established, rep.name, codes, names, kind="1", active=True
            )
            row["credit_code"] = _corrupt_check_character(
                rng, row["credit_code"], CREDIT_CODE_ALPHABET
            )
        else:
            row = enterprise_row(rng, ent_id, region, established, rep.name, codes, names)
        rows.append(row)
    return rows


# --- real estate ---------------------------------------------------------------------------------

_ESTATE_CHARS = "碧桂华翠江景御锦富逸雅丽泽怡海岸君悦中央湖星河保利万科东方山水"
_ESTATE_SUFFIX = ("花园", "名苑", "豪庭", "华府", "雅居", "新城", "公馆", "御景湾", "山庄")
_RIGHT_BOTH = "国有建设用地使用权/房屋所有权"
_RIGHT_LAND = "国有建设用地使用权"


def property_cert_no(year: int, sequence: int) -> str:
    """``粤(2021)佛山市不动产权第0123456号``."""
    return f"粤({year})佛山市不动产权第{sequence:07d}号"


def property_parcel(rng: random.Random) -> tuple[str, str, str, str]:
    """Location, area, usage and right type of a parcel in 南海区."""
    region = region_by_code("440605")
    street, road = rng.choice(region.streets), rng.choice(region.roads)
    estate = "".join(rng.sample(_ESTATE_CHARS, 2)) + rng.choice(_ESTATE_SUFFIX)
    base = f"佛山市南海区{street}{road}{rng.randint(1, 299)}号"
    roll = rng.random()
    if roll < 0.08:
        return base, f"{rng.uniform(150, 3000):.2f}", rng.choice(("住宅", "商业")), _RIGHT_LAND
    if roll < 0.22:
        shop = f"{estate}首层{rng.randint(1, 60)}号铺"
        return base + shop, f"{rng.uniform(20, 400):.2f}", "商业", _RIGHT_BOTH
    room = f"{estate}{rng.randint(1, 15)}座{rng.randint(2, 33)}{rng.randint(1, 6):02d}房"
    area = min(max(rng.gauss(95, 28), 35), 260)
    return base + room, f"{area:.2f}", "住宅", _RIGHT_BOTH


def _property_rows(
    rng: random.Random, count: int, residents: _ResidentPool, sample_owner: Person
) -> list[Row]:
    drafts: list[dict[str, Any]] = []
    while len(drafts) < count:
        day = random_day(rng, UNIFIED_REGISTRATION, AS_OF_DATE - dt.timedelta(days=1))
        city = "440600" if rng.random() < 0.8 else None
        owner = residents.pick(rng, city, day, (18, 90))
        location, area, usage, right = property_parcel(rng)
        draft = {
            "owner": owner,
            "location": location,
            "area_m2": area,
            "usage": usage,
            "right_type": right,
            "register_date": day,
            "right_status": "正常",
            "changed": day,
        }
        roll = rng.random()
        if roll < 0.03 and day < AS_OF_DATE - dt.timedelta(days=200):  # sold: a new owner's cert
            sold = random_day(rng, day + dt.timedelta(days=180), AS_OF_DATE - dt.timedelta(days=1))
            draft.update(right_status="注销", changed=sold)
            buyer = residents.pick(rng, city, sold, (20, 80))
            drafts.append(
                {
                    **draft,
                    "owner": buyer,
                    "register_date": sold,
                    "right_status": "正常",
                    "changed": sold,
                }
            )
        elif roll < 0.05:
            draft.update(right_status="查封", changed=random_day(rng, day, AS_OF_DATE))
        drafts.append(draft)
    del drafts[count:]
    drafts.append(
        {
            "owner": sample_owner,
            "location": "佛山市南海区桂城街道灯湖东路20号嘉华豪庭3座1201房",
            "area_m2": "89.50",
            "usage": "住宅",
            "right_type": _RIGHT_BOTH,
            "register_date": dt.date(2020, 9, 16),
            "right_status": "正常",
            "changed": dt.date(2020, 9, 16),
        }
    )
    drafts.sort(key=lambda d: (d["register_date"], d["location"]))
    sequences: dict[int, int] = {}
    rows = []
    for right_id, draft in enumerate(drafts, start=1):
        year = draft["register_date"].year
        sequences[year] = sequences.get(year, rng.randint(10_000, 60_000)) + rng.randint(1, 15)
        owner: Person = draft["owner"]
        rows.append(
            {
                "right_id": right_id,
                "cert_no": property_cert_no(year, sequences[year]),
                "owner_id": owner.id_number,
                "owner_name": owner.name,
                "location": draft["location"],
                "area_m2": draft["area_m2"],
                "usage": draft["usage"],
                "right_type": draft["right_type"],
                "register_date": draft["register_date"],
                "right_status": draft["right_status"],
                "updated_at": stamp_after(rng, draft["changed"]),
            }
        )
    return rows


# --- everything ----------------------------------------------------------------------------------


def build_department_rows(seed: int, persons: int) -> dict[str, list[Row]]:
    """``conn_id -> rows`` of all five systems for ``seed`` (same seed, same rows).

    Dirty rows, as a real department has them, sit at fixed primary keys whatever the seed
    (:data:`DIRTY_PERSON_IDS`, :data:`DIRTY_ENTERPRISE_IDS`). Their people live alone, are
    referenced by no other system and are not the sample family.
    """
    rng = random.Random(seed)
    population = generate_population(rng, persons, reserved_ids=DIRTY_PERSON_IDS)
    *wrong_check, wrong_date = population.reserved
    for person in wrong_check:
        person.id_number = _corrupt_check_character(rng, person.id_number, "0123456789X")
    wrong_date.id_number = _impossible_birth_date(wrong_date.id_number)
    dirty = {id(p) for p in population.reserved}

    marriages = _marriage_rows(rng, population.couples)
    births = _birth_rows(rng, population)
    residents = _ResidentPool(p for p in population.persons if id(p) not in dirty)
    enterprises = _enterprise_rows(
        rng,
        max(round(persons / 6), MIN_ENTERPRISES),
        residents,
        population.sample_household.members,
    )
    sample_wife = population.sample_couple.wife
    properties = _property_rows(
        rng, max(round(persons / 4), MIN_PROPERTY_RIGHTS), residents, sample_wife
    )
    return {
        "gd_household_db": [person_row(p) for p in population.persons],
        "foshan_marriage_db": marriages,
        "chancheng_birth_db": births,
        "gd_business_db": enterprises,
        "nanhai_realestate_db": properties,
    }
