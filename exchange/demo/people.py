"""Synthetic Guangdong residents and households: the population behind the demo department systems.

Everything here is made up and drawn from one ``random.Random`` so that the same seed gives the
same people. What is realistic about them:

- surnames by frequency (Guangdong's list for locals and migrants from elsewhere in Guangdong,
  the national list for migrants from other provinces), 1–2 character given names in the
  fashion of the birth decade;
- resident identity numbers (GB 11643) whose region code is one that existed when the person
  was born. python-stdnum checks the region code against the birth year, so a resident of
  禅城区 (440604, created 2002) born in 1990 carries 城区 440602 or 石湾区 440603, and one born
  before any county code of their city existed carries the city code (440600) or a migrant's
  home-county code; the sequence number is odd for men and even for women;
- households of 1–5 persons (户主/配偶/子女/父母); spouses live together; children are born
  after the wedding and take (mostly) the father's surname;
- second-generation ID cards with the GB validity rules (under 16: 5 years, 16–25: 10 years,
  26–45: 20 years, 46 and over: long-term) and a handful of cards that were never renewed.

Ages are computed on :data:`AS_OF`, the moment the day-one snapshot of the systems was taken,
not on today's date, so generated data does not change from one day to the next.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

from stdnum.cn import ric
from stdnum.exceptions import ValidationError

from exchange.standards.dates import add_years

__all__ = [
    "AS_OF",
    "AS_OF_DATE",
    "RESIDENCE_REGIONS",
    "SAMPLE_APPLICANT_ID",
    "Birth",
    "Couple",
    "Household",
    "Person",
    "Population",
    "ResidenceRegion",
    "ResidentIds",
    "age_on",
    "card_term_years",
    "county_name",
    "generate_population",
    "given_name",
    "id_region_code",
    "new_resident",
    "random_day",
    "region_by_code",
    "region_code_valid",
    "resident_id",
    "stamp_after",
    "street_address",
    "surname",
]

AS_OF = dt.datetime(2024, 12, 31, 18, 0)
"""When the day-one snapshot of every demo system was taken; no generated date is later."""
AS_OF_DATE = AS_OF.date()
GO_LIVE = dt.date(2016, 3, 1)
"""The department systems went live on this day; older records carry a migration timestamp."""
EARLIEST_BIRTH = dt.date(1940, 1, 1)
PENDING_DAYS = 45
"""Babies born this close to :data:`AS_OF` may not be registered in the household register yet."""


# --- regions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResidenceRegion:
    """A county-level region people live in, with what an address and a card need."""

    code: str
    city: str
    county: str
    city_code: str
    card_authority: str
    streets: tuple[str, ...]
    roads: tuple[str, ...]
    id_codes: tuple[str, ...]
    """Region codes residents born here may carry, newest first (validity is checked per year)."""
    weight: int

    @property
    def place(self) -> str:
        """``佛山市禅城区``; a county-level city (雷州市) is written without its prefecture."""
        return self.county if self.county.endswith("市") else self.city + self.county

    @property
    def in_foshan(self) -> bool:
        return self.city_code == "440600"


RESIDENCE_REGIONS: tuple[ResidenceRegion, ...] = (
    ResidenceRegion(
        "440604",
        "佛山市",
        "禅城区",
        "440600",
        "佛山市公安局禅城分局",
        ("祖庙街道", "石湾镇街道", "张槎街道", "南庄镇"),
        (
            "人民路",
            "祖庙路",
            "汾江中路",
            "季华五路",
            "岭南大道北",
            "建新路",
            "卫国路",
            "普君北路",
            "同济西路",
            "绿景路",
            "朝安南路",
            "文华北路",
        ),
        ("440604", "440602", "440603"),
        33,
    ),
    ResidenceRegion(
        "440605",
        "佛山市",
        "南海区",
        "440600",
        "佛山市公安局南海分局",
        ("桂城街道", "大沥镇", "里水镇", "狮山镇", "西樵镇", "九江镇", "丹灶镇"),
        (
            "南海大道北",
            "桂澜北路",
            "灯湖东路",
            "海八路",
            "南桂东路",
            "佛平路",
            "广佛路",
            "南新四路",
            "天佑三路",
            "桂和路",
        ),
        ("440605", "440682", "440622"),
        24,
    ),
    ResidenceRegion(
        "440606",
        "佛山市",
        "顺德区",
        "440600",
        "佛山市公安局顺德分局",
        ("大良街道", "容桂街道", "伦教街道", "勒流街道", "陈村镇", "北滘镇", "乐从镇", "龙江镇"),
        ("东乐路", "德和路", "南国东路", "顺德大道", "碧桂路", "新城路", "环市北路", "桂畔路"),
        ("440606", "440681", "440623"),
        15,
    ),
    ResidenceRegion(
        "440802",
        "湛江市",
        "赤坎区",
        "440800",
        "湛江市公安局赤坎分局",
        ("中华街道", "寸金街道", "民主街道", "中山街道", "沙湾街道", "调顺街道", "南桥街道"),
        ("北桥路", "中山一路", "海滨大道北", "康宁路", "椹川大道北", "军民大道", "跃进路"),
        ("440802",),
        6,
    ),
    ResidenceRegion(
        "440803",
        "湛江市",
        "霞山区",
        "440800",
        "湛江市公安局霞山分局",
        ("解放街道", "爱国街道", "工农街道", "友谊街道", "新兴街道", "海滨街道", "建设街道"),
        ("人民大道南", "解放西路", "海滨大道南", "洪屋路", "绿荫路", "椹川大道南", "民治路"),
        ("440803",),
        5,
    ),
    ResidenceRegion(
        "440882",
        "湛江市",
        "雷州市",
        "440800",
        "雷州市公安局",
        ("雷城街道", "西湖街道", "新城街道", "附城镇", "白沙镇"),
        ("雷州大道", "西湖大道", "城南路", "新城大道", "曲街"),
        ("440882", "440824"),
        4,
    ),
    ResidenceRegion(
        "440103",
        "广州市",
        "荔湾区",
        "440100",
        "广州市公安局荔湾区分局",
        ("沙面街道", "逢源街道", "多宝街道", "华林街道", "白鹤洞街道", "冲口街道"),
        ("中山八路", "康王中路", "龙津西路", "黄沙大道", "芳村大道东", "多宝路"),
        ("440103", "440120"),
        4,
    ),
    ResidenceRegion(
        "440104",
        "广州市",
        "越秀区",
        "440100",
        "广州市公安局越秀区分局",
        ("北京街道", "农林街道", "东山街道", "梅花村街道", "大塘街道", "洪桥街道"),
        ("北京路", "东风中路", "环市东路", "中山五路", "解放北路", "农林下路", "德政北路"),
        ("440104", "440120"),
        4,
    ),
    ResidenceRegion(
        "440106",
        "广州市",
        "天河区",
        "440100",
        "广州市公安局天河区分局",
        ("天河南街道", "林和街道", "石牌街道", "员村街道", "猎德街道", "五山街道"),
        ("天河路", "体育西路", "天河北路", "黄埔大道西", "中山大道西", "花城大道", "林和西路"),
        ("440106", "440111", "440120"),
        5,
    ),
)
_REGION_WEIGHTS = [r.weight for r in RESIDENCE_REGIONS]


def region_by_code(code: str) -> ResidenceRegion:
    """The residence region with this county code (``KeyError`` if it is not a demo region)."""
    for region in RESIDENCE_REGIONS:
        if region.code == code:
            return region
    raise KeyError(code)


@dataclass(frozen=True)
class _Origin:
    codes: tuple[str, ...]  # the same place's codes over time, newest first
    in_guangdong: bool
    zhuang_share: float = 0.0


# Home counties of people who moved to the Pearl River Delta or Zhanjiang.
_ORIGINS: tuple[_Origin, ...] = (
    _Origin(("441424", "442424"), True),  # 五华
    _Origin(("441481", "442425"), True),  # 兴宁
    _Origin(("441421", "442421"), True),  # 梅县
    _Origin(("445281", "442328"), True),  # 普宁
    _Origin(("440881", "440822"), True),  # 廉江
    _Origin(("440823",), True),  # 遂溪
    _Origin(("440981", "440921"), True),  # 高州 / 信宜
    _Origin(("441322", "442521"), True),  # 博罗 / 惠阳
    _Origin(("430421",), False),  # 衡阳县
    _Origin(("430524",), False),  # 隆回
    _Origin(("431021",), False),  # 桂阳
    _Origin(("430981", "432301"), False),  # 沅江 / 益阳
    _Origin(("450821", "450881"), False, zhuang_share=0.4),  # 平南 / 桂平
    _Origin(("511322", "512922"), False),  # 营山 / 南部
    _Origin(("360730", "360731"), False),  # 宁都 / 于都
)


@cache
def region_code_valid(code: str, year: int) -> bool:
    """Whether python-stdnum accepts ``code`` as the region of a resident ID born in ``year``."""
    probe = f"{code}{year:04d}0101001"
    try:
        ric.get_birth_place(probe + ric.calc_check_digit(probe + "0"))
    except (ValidationError, KeyError):  # stdnum raises KeyError for a province-only match
        return False
    return True


@cache
def county_name(code: str, year: int) -> str:
    """The name stdnum gives region ``code`` in ``year`` (``城区`` for 440602 in 1990)."""
    probe = f"{code}{year:04d}0101001"
    return ric.get_birth_place(probe + ric.calc_check_digit(probe + "0"))["county"]


def resident_id(region_code: str, birth: dt.date, sequence: int) -> str:
    """A resident identity number with its check character (``stdnum.cn.ric``)."""
    body = f"{region_code}{birth:%Y%m%d}{sequence:03d}"
    return body + ric.calc_check_digit(body + "0")  # stdnum ignores the last character


class ResidentIds:
    """Issues unique resident identity numbers."""

    def __init__(self, taken: Sequence[str] = ()) -> None:
        self._taken: set[str] = set(taken)

    def reserve(self, number: str) -> str:
        if number in self._taken:
            raise ValueError("resident ID issued twice")
        self._taken.add(number)
        return number

    def issue(self, rng: random.Random, region_code: str, birth: dt.date, gender: str) -> str:
        odd = gender == "男"
        while True:
            sequence = rng.randrange(0, 500) * 2 + (1 if odd else 0)
            if sequence == 0:
                continue
            number = resident_id(region_code, birth, sequence)
            if number not in self._taken:
                self._taken.add(number)
                return number


def id_region_code(
    rng: random.Random, region: ResidenceRegion, birth_year: int, origin: _Origin | None = None
) -> str:
    """The region code a person born in ``birth_year`` carries (see the module docstring)."""
    if origin is not None:
        codes = [c for c in origin.codes if region_code_valid(c, birth_year)]
        if codes:
            return codes[0]
    codes = [c for c in region.id_codes if region_code_valid(c, birth_year)]
    return rng.choice(codes) if codes else region.city_code


def pick_region(rng: random.Random) -> ResidenceRegion:
    return rng.choices(RESIDENCE_REGIONS, weights=_REGION_WEIGHTS)[0]


def street_address(rng: random.Random, region: ResidenceRegion, *, with_street: bool = True) -> str:
    """``佛山市禅城区祖庙街道人民路128号3座1502房`` (without ``广东省``)."""
    street = rng.choice(region.streets) if with_street else ""
    road = rng.choice(region.roads)
    number = rng.randint(1, 399)
    style = rng.random()
    if style < 0.55:
        room = f"{rng.randint(1, 12)}座{rng.randint(2, 32)}{rng.randint(1, 8):02d}房"
    elif style < 0.85:
        room = f"{rng.randint(1, 20)}栋{rng.randint(1, 9)}0{rng.randint(1, 6)}房"
    else:
        room = ""
    return f"{region.place}{street}{road}{number}号{room}"


# --- names ---------------------------------------------------------------------------------------

_GD_SURNAMES = (
    ("陈", 95),
    ("李", 65),
    ("黄", 55),
    ("张", 40),
    ("梁", 33),
    ("林", 32),
    ("刘", 30),
    ("吴", 28),
    ("罗", 25),
    ("杨", 22),
    ("周", 17),
    ("郑", 17),
    ("何", 16),
    ("钟", 15),
    ("谢", 14),
    ("冯", 12),
    ("邓", 12),
    ("曾", 11),
    ("叶", 11),
    ("王", 13),
    ("蔡", 10),
    ("卢", 8),
    ("苏", 8),
    ("潘", 8),
    ("彭", 7),
    ("许", 7),
    ("朱", 7),
    ("廖", 7),
    ("余", 6),
    ("赖", 6),
    ("邱", 6),
    ("莫", 6),
    ("麦", 5),
    ("温", 5),
    ("关", 4),
    ("区", 3),
    ("古", 3),
    ("欧阳", 2),
    ("司徒", 1),
)
_NATIONAL_SURNAMES = (
    ("王", 725),
    ("李", 719),
    ("张", 683),
    ("刘", 538),
    ("陈", 453),
    ("杨", 308),
    ("黄", 223),
    ("赵", 218),
    ("吴", 198),
    ("周", 195),
    ("徐", 145),
    ("孙", 138),
    ("马", 120),
    ("朱", 115),
    ("胡", 114),
    ("郭", 109),
    ("何", 103),
    ("高", 97),
    ("林", 96),
    ("罗", 86),
    ("郑", 81),
    ("梁", 81),
    ("谢", 70),
    ("宋", 65),
    ("唐", 63),
    ("许", 60),
    ("韩", 59),
    ("冯", 57),
    ("邓", 56),
    ("曹", 54),
    ("彭", 51),
    ("曾", 50),
    ("肖", 49),
    ("田", 47),
    ("董", 46),
    ("袁", 45),
    ("潘", 43),
    ("于", 42),
    ("蒋", 41),
    ("蔡", 40),
    ("余", 39),
    ("杜", 38),
    ("叶", 37),
    ("程", 37),
    ("苏", 35),
    ("魏", 35),
    ("吕", 34),
    ("丁", 33),
    ("任", 32),
    ("沈", 31),
    ("覃", 20),
    ("韦", 20),
)
_GIVEN = {
    ("男", 0): "国建华强明志德荣伟文武军平海林兴昌福贵坤雄耀锦炳汉振卫东永康胜",
    ("男", 1): "伟强磊军勇杰涛斌超明辉鹏峰俊健文华波东锋志宏亮刚浩剑智彬锐坚",
    ("男", 2): "子梓浩宇轩睿泽铭俊嘉晨博航煜皓逸然哲昊宸奕皓霖恒熙朗楷沐",
    ("女", 0): "秀英桂兰玉珍凤淑芳华琼妹娣丽美金银月惠群彩爱莲燕",
    ("女", 1): "丽敏静燕艳娟霞玲萍红婷雪琳慧颖芳洁倩莉晓嘉丹妮春梅",
    ("女", 2): "梓涵欣怡雨桐诗琪思悦可馨萱语若晴佳雅妍彤依希芷沫瑶",
}


def _era(birth_year: int) -> int:
    return 0 if birth_year < 1970 else 1 if birth_year < 1995 else 2


def surname(rng: random.Random, *, national: bool = False) -> str:
    table = _NATIONAL_SURNAMES if national else _GD_SURNAMES
    return rng.choices([s for s, _ in table], weights=[w for _, w in table])[0]


def given_name(rng: random.Random, gender: str, birth_year: int) -> str:
    """One or two characters in the fashion of the birth decade."""
    pool = _GIVEN[(gender, _era(birth_year))]
    single_share = 0.25 if _era(birth_year) == 1 else 0.1
    if rng.random() < single_share:
        return rng.choice(pool)
    first, second = rng.sample(pool, 2)
    return first + second


def _ethnicity(rng: random.Random, origin: _Origin | None) -> str:
    if origin is not None and rng.random() < origin.zhuang_share:
        return "壮"
    roll = rng.random()
    for name, cumulative in (
        ("壮", 0.015),
        ("瑶", 0.022),
        ("回", 0.027),
        ("满", 0.031),
        ("畲", 0.034),
        ("土家", 0.04),
    ):
        if roll < cumulative:
            return name
    return "汉"


def new_resident(
    rng: random.Random,
    ids: ResidentIds,
    region: ResidenceRegion,
    gender: str,
    birth: dt.date,
    *,
    migrant_share: float,
) -> Person:
    """A person living in ``region``: born there or, by ``migrant_share``, a migrant."""
    origin = rng.choice(_ORIGINS) if rng.random() < migrant_share else None
    code = id_region_code(rng, region, birth.year, origin)
    family = surname(rng, national=origin is not None and not origin.in_guangdong)
    return Person(
        surname=family,
        name=family + given_name(rng, gender, birth.year),
        gender=gender,
        birth_date=birth,
        id_number=ids.issue(rng, code, birth, gender),
        region=region,
        ethnicity=_ethnicity(rng, origin),
        native=code in region.id_codes or code == region.city_code,
    )


# --- cards, dates and timestamps -----------------------------------------------------------------


def card_term_years(age: int) -> int | None:
    """Validity of a resident ID card issued at ``age``; ``None`` means long-term (长期)."""
    if age < 16:
        return 5
    if age <= 25:
        return 10
    if age <= 45:
        return 20
    return None


def age_on(birth: dt.date, day: dt.date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def random_day(rng: random.Random, start: dt.date, end: dt.date) -> dt.date:
    """A day in ``[start, end]`` (``start`` when the range is empty)."""
    span = (end - start).days
    return start + dt.timedelta(days=rng.randint(0, span)) if span > 0 else start


def stamp_after(rng: random.Random, day: dt.date, *, lag_days: float = 20.0) -> dt.datetime:
    """When a record last changed, given the latest business date it carries.

    Records older than the system's go-live carry a migration timestamp (minute precision, so
    many rows share one); newer ones were changed during office hours within days of ``day``.
    Never later than :data:`AS_OF`.
    """
    if day < GO_LIVE:
        return dt.datetime(2016, 2, 27, 1, 0) + dt.timedelta(minutes=rng.randrange(0, 300))
    day = day + dt.timedelta(days=min(int(rng.expovariate(1 / lag_days)), 400))
    moment = dt.datetime.combine(day, dt.time(8, 30)) + dt.timedelta(
        seconds=rng.randrange(0, 9 * 3600)
    )
    return min(moment, AS_OF - dt.timedelta(seconds=rng.randrange(60, 36_000)))


def current_card(
    rng: random.Random, birth: dt.date, earliest: dt.date, *, renews: bool = True
) -> tuple[dt.date, dt.date | None]:
    """Issue date and expiry (``None`` = long-term) of the card a person holds on AS_OF.

    Second-generation cards were issued from 2004; each card is renewed shortly before it
    expires unless ``renews`` is false, in which case a card that ran out in the last three
    years is left in place.
    """
    first_age = rng.choice([0, 3, 6, 10, 14]) if rng.random() < 0.35 else rng.randint(16, 18)
    issue = max(
        add_years(birth, first_age) + dt.timedelta(days=rng.randint(15, 300)),
        random_day(rng, dt.date(2004, 3, 1), dt.date(2012, 12, 31)),
        earliest,
    )
    issue = min(issue, AS_OF_DATE - dt.timedelta(days=rng.randint(0, 5)))
    if issue < earliest:
        issue = min(earliest, AS_OF_DATE)
    lapsed_since = add_years(AS_OF_DATE, -3)
    while True:
        term = card_term_years(age_on(birth, issue))
        if term is None:
            return issue, None
        valid_to = add_years(issue, term)
        if valid_to > AS_OF_DATE or (not renews and valid_to > lapsed_since):
            return issue, valid_to
        issue = max(issue, valid_to - dt.timedelta(days=rng.randint(3, 80)))


# --- the population ------------------------------------------------------------------------------


@dataclass(eq=False)
class Person:
    """One row of the household registry (``persons``) before it is written."""

    surname: str
    name: str
    gender: str
    birth_date: dt.date
    id_number: str
    region: ResidenceRegion
    ethnicity: str = "汉"
    relation: str = "户主"
    household_status: str = "正常"
    registered_on: dt.date = AS_OF_DATE
    card_issue_date: dt.date = AS_OF_DATE
    card_valid_to: dt.date | None = None
    household_no: str = ""
    address: str = ""
    register_no: str = ""
    updated_at: dt.datetime = AS_OF
    person_id: int = 0
    native: bool = True
    card_fixed: bool = False

    def age(self, day: dt.date = AS_OF_DATE) -> int:
        return age_on(self.birth_date, day)


@dataclass(eq=False)
class Couple:
    """A marriage between two persons; ``divorced_on`` is set for a dissolved one."""

    husband: Person
    wife: Person
    married_on: dt.date
    region: ResidenceRegion
    """Where the couple lived when they married (their registration office's county)."""
    registered_in_foshan: bool
    divorced_on: dt.date | None = None

    @property
    def status(self) -> str:
        return "离婚" if self.divorced_on else "已婚"


@dataclass(eq=False)
class Birth:
    """A child born to a couple; ``baby`` is ``None`` while the newborn is not registered yet."""

    couple: Couple
    baby_name: str
    baby_gender: str
    birth_date: dt.date
    baby: Person | None
    in_chancheng_hospital: bool


@dataclass(eq=False)
class Household:
    """People sharing one 户口簿: one address, one household number."""

    region: ResidenceRegion
    address: str
    members: list[Person] = field(default_factory=list)


@dataclass
class Population:
    """Everyone in the household registry plus the marriages and births that link them."""

    persons: list[Person]
    households: list[Household]
    couples: list[Couple]
    births: list[Birth]
    sample_household: Household
    sample_couple: Couple
    sample_birth: Birth
    reserved: list[Person]
    """The adults living alone who hold the reserved person ids, in id order."""


# The sample family used by `govx demo`: fixed across seeds so that docs can name it.
_SAMPLE_HUSBAND = ("李", "伟明", "男", dt.date(1990, 3, 12), "440602", 31)
_SAMPLE_WIFE = ("陈", "嘉欣", "女", dt.date(1993, 6, 15), "440682", 24)
_SAMPLE_GRANDMOTHER = ("黄", "秀英", "女", dt.date(1962, 8, 3), "442421", 44)
SAMPLE_APPLICANT_ID = resident_id(_SAMPLE_WIFE[4], _SAMPLE_WIFE[3], _SAMPLE_WIFE[5])
"""The mother who applies for 新生儿入户登记 in the demo (synthetic)."""


class _Builder:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.ids = ResidentIds()
        self.households: list[Household] = []
        self.couples: list[Couple] = []
        self.births: list[Birth] = []
        self.count = 0

    # people ------------------------------------------------------------------------------------

    def _birth_date(self, first: int, last: int, mode: int) -> dt.date:
        year = round(self.rng.triangular(first, last, mode))
        return random_day(self.rng, dt.date(year, 1, 1), dt.date(year, 12, 31))

    def adult(
        self, region: ResidenceRegion, gender: str, birth: dt.date, *, migrant_share: float
    ) -> Person:
        return new_resident(self.rng, self.ids, region, gender, birth, migrant_share=migrant_share)

    def child(self, region: ResidenceRegion, family: str, birth: dt.date, ethnicity: str) -> Person:
        rng = self.rng
        gender = "男" if rng.random() < 0.52 else "女"
        code = id_region_code(rng, region, birth.year)
        return Person(
            surname=family,
            name=family + given_name(rng, gender, birth.year),
            gender=gender,
            birth_date=birth,
            id_number=self.ids.issue(rng, code, birth, gender),
            region=region,
            ethnicity=ethnicity,
            relation="子女",
        )

    # households --------------------------------------------------------------------------------

    def _household(self, region: ResidenceRegion, members: list[Person]) -> Household:
        household = Household(region, street_address(self.rng, region), members)
        self.households.append(household)
        self.count += len(members)
        return household

    def _migrant_share(self, region: ResidenceRegion) -> float:
        return 0.1 if region.city_code == "440800" else 0.28

    def single(self, region: ResidenceRegion) -> Household:
        rng = self.rng
        gender = "男" if rng.random() < 0.55 else "女"
        young = rng.random() < 0.7
        birth = self._birth_date(1975, 2006, 1998) if young else self._birth_date(1940, 1975, 1950)
        person = self.adult(region, gender, birth, migrant_share=self._migrant_share(region))
        person.registered_on = self._registered_on(person, add_years(birth, 18))
        if person.age() >= 80 and rng.random() < 0.1:
            person.household_status = "注销"
        elif rng.random() < 0.02:
            person.household_status = "迁出"
        return self._household(region, [person])

    def _registered_on(self, person: Person, moved_in: dt.date) -> dt.date:
        """Birth registration for natives, otherwise the day the person moved in."""
        rng = self.rng
        if person.native and rng.random() < 0.6:
            day = person.birth_date + dt.timedelta(days=rng.randint(7, 40))
            day = max(day, random_day(rng, dt.date(1958, 1, 1), dt.date(1960, 12, 31)))
        else:
            day = moved_in + dt.timedelta(days=rng.randint(0, 5 * 365))
        return min(day, AS_OF_DATE - dt.timedelta(days=rng.randint(1, 60)))

    def _couple(
        self, region: ResidenceRegion, *, young: bool = False
    ) -> tuple[Person, Person, dt.date]:
        rng = self.rng
        share = self._migrant_share(region)
        while True:
            if young:
                husband_birth = self._birth_date(1975, 1998, 1988)
            else:
                husband_birth = self._birth_date(1942, 1999, 1982)
            wife_birth = husband_birth + dt.timedelta(days=round(rng.gauss(2.5, 2.2) * 365))
            wife_birth = max(wife_birth, EARLIEST_BIRTH)
            earliest = max(add_years(husband_birth, 22), add_years(wife_birth, 20))
            if earliest < AS_OF_DATE - dt.timedelta(days=60):
                break
        married_on = earliest + dt.timedelta(days=int(rng.expovariate(1 / 1100)))
        married_on = min(married_on, AS_OF_DATE - dt.timedelta(days=rng.randint(30, 400)))
        married_on = max(married_on, earliest)
        husband = self.adult(region, "男", husband_birth, migrant_share=share)
        wife = self.adult(region, "女", wife_birth, migrant_share=share)
        return husband, wife, married_on

    def _children(self, couple: Couple, region: ResidenceRegion, limit: int) -> list[Person]:
        rng = self.rng
        year = couple.married_on.year
        if year < 1980:
            weights = {1: 2, 2: 5, 3: 3}
        elif year < 2016:
            weights = {0: 1, 1: 6, 2: 3}
        else:
            weights = {0: 2, 1: 4, 2: 4, 3: 1}
        wanted = rng.choices(list(weights), weights=list(weights.values()))[0]
        father, mother = couple.husband, couple.wife
        end = couple.divorced_on or AS_OF_DATE
        kids: list[Person] = []
        day = couple.married_on + dt.timedelta(days=rng.randint(280, 3 * 365))
        for _ in range(wanted):
            if day > end or age_on(mother.birth_date, day) > 44:
                break
            family = father.surname if rng.random() < 0.95 else mother.surname
            kid = self.child(region, family, day, father.ethnicity)
            birth = Birth(
                couple,
                kid.name,
                kid.gender,
                day,
                kid,
                in_chancheng_hospital=self._chancheng_birth(couple, region, day),
            )
            moved_out = kid.age() >= 26 and rng.random() < 0.7
            if moved_out or len(kids) >= limit:
                pass  # lives elsewhere: not part of this sample
            elif (
                birth.in_chancheng_hospital
                and (AS_OF_DATE - day).days < PENDING_DAYS
                and rng.random() < 0.6
            ):
                birth.baby = None  # born, certificate issued, not yet in the household register
                self.births.append(birth)
            else:
                kid.registered_on = min(day + dt.timedelta(days=rng.randint(7, 40)), AS_OF_DATE)
                if kid.age() >= 18 and rng.random() < 0.08:
                    kid.household_status = "迁出"
                kids.append(kid)
                self.births.append(birth)
            day += dt.timedelta(days=rng.randint(500, 6 * 365))
        return kids

    def _chancheng_birth(self, couple: Couple, region: ResidenceRegion, day: dt.date) -> bool:
        if not couple.registered_in_foshan or day < dt.date(2005, 1, 1):
            return False
        share = 0.9 if region.code == "440604" else 0.3 if region.in_foshan else 0.0
        return self.rng.random() < share

    def family(self, region: ResidenceRegion, *, with_children: bool, elder: bool) -> Household:
        rng = self.rng
        husband, wife, married_on = self._couple(region, young=elder)
        couple = Couple(
            husband,
            wife,
            married_on,
            region,
            registered_in_foshan=region.in_foshan and rng.random() < 0.85,
        )
        self.couples.append(couple)
        head, spouse = (husband, wife) if rng.random() < 0.85 else (wife, husband)
        spouse.relation = "配偶"
        head.registered_on = self._registered_on(head, add_years(head.birth_date, 18))
        head.registered_on = min(head.registered_on, married_on + dt.timedelta(days=30))
        spouse.registered_on = min(married_on + dt.timedelta(days=rng.randint(0, 180)), AS_OF_DATE)
        members = [head, spouse]
        if elder:
            parent = self._elder(region, head)
            if parent is not None:
                members.append(parent)
        if with_children:
            members += self._children(couple, region, limit=5 - len(members))
        return self._household(region, members)

    def _elder(self, region: ResidenceRegion, son: Person) -> Person | None:
        """A parent of the head of the household (``son`` may be a daughter)."""
        rng = self.rng
        birth = son.birth_date - dt.timedelta(days=rng.randint(22 * 365, 34 * 365))
        if birth < EARLIEST_BIRTH:
            return None
        gender = "女" if rng.random() < 0.65 else "男"
        parent = self.adult(region, gender, birth, migrant_share=0.0 if son.native else 1.0)
        if gender == "男":
            parent.name = son.surname + parent.name[len(parent.surname) :]
            parent.surname = son.surname
        parent.relation = "父母"
        parent.registered_on = random_day(
            rng, max(son.registered_on, add_years(son.birth_date, 22)), AS_OF_DATE
        )
        if parent.age() >= 75 and rng.random() < 0.15:
            parent.household_status = "注销"
        return parent

    def divorced(self, region: ResidenceRegion) -> None:
        """A divorced couple: one parent keeps the children, the other lives alone."""
        rng = self.rng
        husband, wife, married_on = self._couple(region, young=True)
        couple = Couple(husband, wife, married_on, region, registered_in_foshan=True)
        earliest = married_on + dt.timedelta(days=2 * 365)
        latest = AS_OF_DATE - dt.timedelta(days=30)
        if earliest <= latest:
            couple.divorced_on = random_day(rng, earliest, latest)
        # else: married too recently to have divorced; stays a married couple
        self.couples.append(couple)
        if couple.divorced_on is None:
            husband.registered_on = self._registered_on(husband, add_years(husband.birth_date, 18))
            wife.relation = "配偶"
            wife.registered_on = min(married_on + dt.timedelta(days=30), AS_OF_DATE)
            kids = self._children(couple, region, limit=3)
            self._household(region, [husband, wife, *kids])
            return
        keeper, other = (wife, husband) if rng.random() < 0.8 else (husband, wife)
        keeper.registered_on = min(married_on + dt.timedelta(days=rng.randint(0, 90)), AS_OF_DATE)
        kids = self._children(couple, region, limit=2)
        self._household(region, [keeper, *kids])
        other.registered_on = min(
            couple.divorced_on + dt.timedelta(days=rng.randint(10, 200)), AS_OF_DATE
        )
        other_region = rng.choice([r for r in RESIDENCE_REGIONS if r.in_foshan])
        other.region = other_region
        self._household(other_region, [other])

    def sample_family(self) -> tuple[Household, Couple, Birth]:
        """李伟明 and 陈嘉欣 of 禅城区, his mother, and their daughter born in December 2024."""
        region = region_by_code("440604")

        def fixed(spec: tuple[str, str, str, dt.date, str, int]) -> Person:
            family, given, gender, birth, code, sequence = spec
            return Person(
                surname=family,
                name=family + given,
                gender=gender,
                birth_date=birth,
                id_number=self.ids.reserve(resident_id(code, birth, sequence)),
                region=region,
                native=code in region.id_codes,
            )

        husband, wife, grandmother = (
            fixed(_SAMPLE_HUSBAND),
            fixed(_SAMPLE_WIFE),
            fixed(_SAMPLE_GRANDMOTHER),
        )
        husband.card_issue_date, husband.card_valid_to = dt.date(2016, 4, 11), dt.date(2036, 4, 11)
        wife.card_issue_date, wife.card_valid_to = dt.date(2019, 7, 12), dt.date(2039, 7, 12)
        husband.card_fixed = wife.card_fixed = True
        husband.registered_on = dt.date(1990, 4, 2)
        wife.relation, wife.registered_on = "配偶", dt.date(2019, 7, 8)
        grandmother.relation, grandmother.registered_on = "父母", dt.date(2024, 9, 20)
        couple = Couple(husband, wife, dt.date(2019, 5, 20), region, registered_in_foshan=True)
        birth = Birth(couple, "李梓涵", "女", dt.date(2024, 12, 18), None, True)
        household = Household(
            region, "佛山市禅城区祖庙街道人民路128号3座1502房", [husband, wife, grandmother]
        )
        return household, couple, birth


def _finish(rng: random.Random, households: list[Household]) -> list[Person]:
    """Number households and persons; give everyone an address, a card and a timestamp."""
    persons: list[Person] = []
    register_serial: dict[str, int] = {}
    household_serial: dict[str, int] = {}
    for household in households:
        code = household.region.code
        household_serial[code] = household_serial.get(code, rng.randint(1, 400)) + rng.randint(1, 9)
        household_no = f"{code[2:]}{household_serial[code]:06d}"
        for person in household.members:
            register_serial[code] = register_serial.get(
                code, rng.randint(10_000_000, 90_000_000)
            ) + rng.randint(1, 40)
            person.person_id = len(persons) + 1
            person.household_no = household_no
            person.address = "广东省" + household.address
            person.register_no = f"{code}{register_serial[code]:09d}"
            person.region = household.region
            if not person.card_fixed:
                earliest = max(person.registered_on, person.birth_date + dt.timedelta(days=15))
                person.card_issue_date, person.card_valid_to = current_card(
                    rng,
                    person.birth_date,
                    earliest if person.relation == "子女" else EARLIEST_BIRTH,
                    renews=rng.random() >= 0.08,
                )
            latest = max(person.registered_on, person.card_issue_date)
            person.updated_at = stamp_after(rng, latest)
            persons.append(person)
    return persons


def _order(
    households: list[Household], reserved: Sequence[tuple[int, Household]]
) -> list[Household]:
    """Households in registry order, each reserved one placed so its person gets its fixed id."""
    queue = deque(households)
    targets = deque(sorted(reserved, key=lambda t: t[0]))
    ordered: list[Household] = []
    count = 0
    while queue or targets:
        if targets and count + 1 == targets[0][0]:
            household = targets.popleft()[1]
        elif not queue:
            raise RuntimeError(f"person_id {targets[0][0]} is beyond the population")
        elif targets and count + len(queue[0].members) >= targets[0][0]:
            # the next household would cover a reserved id: bring a one-person household forward
            household = next((h for h in queue if len(h.members) == 1), None)
            if household is None:
                raise RuntimeError("no one-person household left to keep a reserved id free")
            queue.remove(household)
        else:
            household = queue.popleft()
        ordered.append(household)
        count += len(household.members)
    return ordered


def generate_population(
    rng: random.Random, persons: int, reserved_ids: Sequence[int] = ()
) -> Population:
    """Exactly ``persons`` residents in households of 1–5, the sample family among them.

    ``reserved_ids`` are person ids given to adults who live alone, are 正常, appear in no
    marriage or birth and are not the sample family (:attr:`Population.reserved`): the
    department systems make their rows dirty.
    """
    if any(not 0 < i <= persons for i in reserved_ids):
        raise ValueError(f"reserved person ids must lie in 1..{persons}")
    builder = _Builder(rng)
    sample_household, sample_couple, sample_birth = builder.sample_family()
    loners = []
    for _ in reserved_ids:
        loner = builder.single(pick_region(rng))
        loner.members[0].household_status = "正常"
        loners.append(builder.households.pop())
    target = persons - len(sample_household.members)
    kinds = ("single", "couple", "family", "elder", "divorced")
    while builder.count < target:
        remaining = target - builder.count
        region = pick_region(rng)
        kind = rng.choices(kinds, weights=(20, 10, 50, 14, 6))[0] if remaining > 6 else "single"
        if kind == "single":
            builder.single(region)
        elif kind == "divorced" and region.in_foshan:
            builder.divorced(region)
        else:
            builder.family(region, with_children=kind != "couple", elder=kind == "elder")
    households = builder.households
    households.insert(len(households) // 2, sample_household)
    households = _order(households, list(zip(reserved_ids, loners, strict=True)))
    builder.couples.append(sample_couple)
    builder.births.append(sample_birth)
    people = _finish(rng, households)
    reserved = [h.members[0] for h in loners]
    assert [p.person_id for p in reserved] == list(reserved_ids)
    return Population(
        people,
        households,
        builder.couples,
        builder.births,
        sample_household,
        sample_couple,
        sample_birth,
        reserved,
    )
