"""Standardization of person records, vectorized over a DataFrame.

Input columns follow the identity contract in DESIGN.md (`record_id` required, the rest optional):
record_id, source, name, given_name, family_name, phone, email, birth_date, gender, id_number,
member_no, wechat_unionid, street_number, address_1, address_2, address, district, city, province,
postcode, and optionally wechat_openid, nickname, phone_verified.

Output columns are named like `SourceIdentity`'s fields so the sync layer lands them as they are.
Expensive per-value work (pinyin, phonenumbers, cpca) runs once per distinct value, never per row.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import date
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

STANDARDIZED_ATTRIBUTES: tuple[str, ...] = (
    "name",
    "name_pinyin",
    "nickname",
    "phone",
    "phone_masked",
    "phone_verified",
    "email",
    "birth_date",
    "gender",
    "id_number",
    "member_no",
    "wechat_unionid",
    "wechat_openid",
    "province",
    "city",
    "district",
    "address_detail",
    "postcode",
)
"""The normalized attributes, named as `SourceIdentity`'s columns."""

STANDARD_COLUMNS: tuple[str, ...] = ("record_id", "source", *STANDARDIZED_ATTRIBUTES)

# Readings of characters used as surnames that differ from their everyday reading (pypinyin's default).
SURNAME_READINGS: dict[str, str] = {
    "曾": "zeng",
    "单": "shan",
    "解": "xie",
    "仇": "qiu",
    "朴": "piao",
    "查": "zha",
    "翟": "zhai",
    "区": "ou",
    "盖": "ge",
    "乐": "yue",
    "缪": "miao",
    "秘": "bi",
    "覃": "qin",
    "种": "chong",
    "员": "yun",
    "黑": "he",
    "繁": "po",
    "折": "she",
    "召": "shao",
    "冼": "xian",
    "牟": "mou",
    "句": "gou",
    "能": "nai",
    "都": "du",
    "任": "ren",
    "沈": "shen",
    "柏": "bai",
    "宁": "ning",
    "华": "hua",
    "纪": "ji",
    "燕": "yan",
    "葛": "ge",
    "相": "xiang",
    "仉": "zhang",
    "褚": "chu",
    "隗": "wei",
    "殷": "yin",
    "卜": "bu",
    "乜": "nie",
    "阚": "kan",
    "藏": "zang",
    "长孙": "zhangsun",
    "尉迟": "yuchi",
    "万俟": "moqi",
    "单于": "chanyu",
    "澹台": "tantai",
}
COMPOUND_SURNAMES: frozenset[str] = frozenset(
    {
        "欧阳",
        "司马",
        "诸葛",
        "上官",
        "慕容",
        "令狐",
        "皇甫",
        "尉迟",
        "长孙",
        "宇文",
        "澹台",
        "公孙",
        "东方",
        "夏侯",
        "轩辕",
        "单于",
        "万俟",
        "司徒",
        "司空",
        "端木",
        "呼延",
        "南宫",
        "独孤",
    }
)

# Common single-character surnames (about 99% of the population); a "name" that starts with none of
# these nor a compound surname is taken for a nickname (微博 screen names, 小云0521).
COMMON_SURNAMES: frozenset[str] = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
    "常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单"
    "季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚"
    "娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池"
    "查麻苑迟邝官封谈匡鞠惠荆乐冀郁胥南班储原栗燕楚鄢劳谌奚皮粟冼蔺楼盘满闻位厉伊仝区郜海阚花权强帅屠豆朴"
    "盖练廉禹井祖漆巴丰支卿国狄平计索宣晋相初门云容敬来扈晁芮都普阙浦戈伏鹿薄邸雍辜羊阿乌母裘亓修邰赫杭况"
    "那宿鲜印逯隆茹诸战慕危玉银亢嵇公哈湛宾戎勾茅利於呼居揭干但尉冶斯元束檀衣信展阴昝智幸奉植衡富尧闭由"
)
_NAME_MASK = re.compile(r"[*＊]")
_ADDRESS_MASK = re.compile(r"[*＊]+")

# Municipalities: cpca reports their city as 市辖区; the city of Shanghai is Shanghai.
MUNICIPALITIES: frozenset[str] = frozenset({"北京市", "上海市", "天津市", "重庆市"})

# Provider aliases: one mailbox, several spellings.
EMAIL_DOMAIN_ALIASES: dict[str, str] = {"googlemail.com": "gmail.com", "vip.qq.com": "qq.com"}
# Providers that ignore dots in the local part.
EMAIL_DOT_INSENSITIVE: frozenset[str] = frozenset({"gmail.com"})
# Providers that deliver `user+tag@` to `user@`.
EMAIL_PLUS_TAGS: frozenset[str] = frozenset(
    {"gmail.com", "outlook.com", "hotmail.com", "live.com", "icloud.com", "fastmail.com"}
)

_CJK = re.compile(r"[\u3400-\u9fff]")
_MASKED_MOBILE = re.compile(r"^(1[3-9]\d)[*xX]{4}(\d{4})$")
_CN_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_EXTENSION = re.compile(r"(?:ext\.?|x|转|分机|#)\s*\d+$", re.IGNORECASE)
_ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_ID_CHECK = "10X98765432"
_GENDER = {
    "m": "m",
    "male": "m",
    "man": "m",
    "男": "m",
    "1": "m",
    "f": "f",
    "female": "f",
    "woman": "f",
    "女": "f",
    "2": "f",
}
_TRUE = {"1", "true", "t", "yes", "y", "verified"}


def _text(df: pd.DataFrame, column: str) -> pd.Series:
    """Column as stripped strings with None for missing/blank; a missing column is all None."""
    if column not in df.columns:
        return pd.Series([None] * len(df), index=df.index, dtype=object)
    # A plain loop over the objects: pandas' string dtype and its .str.strip cost a fifth of the whole
    # standardization over a million rows.
    out: list[str | None] = []
    for v in df[column].to_numpy(dtype=object):
        if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v):
            out.append(None)
            continue
        text = (v if isinstance(v, str) else str(v)).strip()
        out.append(text or None)
    return pd.Series(out, index=df.index, dtype=object)


def _per_unique(values: pd.Series, fn: Callable[[Any], Any]) -> pd.Series:
    """Apply `fn` once per distinct non-null value (the expensive standardizers are pure)."""
    present = values.dropna()
    if present.empty:
        return pd.Series([None] * len(values), index=values.index, dtype=object)
    uniques = pd.unique(present)
    table = {u: fn(u) for u in uniques}
    out = pd.Series(values.map(table.get).to_numpy(dtype=object), index=values.index, dtype=object)
    return out.where(out.notna(), None)


# --------------------------------------------------------------------------- names


@lru_cache(maxsize=1)
def _opencc() -> Callable[[str], str]:
    import opencc

    converter = opencc.OpenCC("t2s")
    return converter.convert


_CHAR_T2S: dict[str, str] = {}


def _t2s_text(text: str) -> str:
    """Traditional to simplified, character by character through a cache (OpenCC's phrase parser
    costs ~60 us a string; names and addresses convert one character at a time)."""
    out = []
    for c in text:
        simplified = _CHAR_T2S.get(c)
        if simplified is None:
            simplified = _opencc()(c) if "\u3400" <= c <= "\u9fff" else c
            _CHAR_T2S[c] = simplified
        out.append(simplified)
    return "".join(out)


def _t2s() -> Callable[[str], str]:
    return _t2s_text


_CHAR_PINYIN: dict[str, str] = {}


def _char_pinyin(char: str) -> str:
    # Per character, not per phrase: given names are not dictionary words, so phrase context misleads.
    reading = _CHAR_PINYIN.get(char)
    if reading is None:
        from pypinyin import Style, lazy_pinyin

        reading = "".join(lazy_pinyin(char, style=Style.NORMAL, errors="ignore")).lower()
        _CHAR_PINYIN[char] = reading
    return reading


def split_chinese_name(name: str) -> tuple[str, str]:
    """(family, given) of a Chinese name written family-first, compound surnames included."""
    if len(name) >= 3 and name[:2] in COMPOUND_SURNAMES:
        return name[:2], name[2:]
    if len(name) >= 2:
        return name[:1], name[1:]
    return name, ""


def is_plausible_chinese_name(name: str) -> bool:
    """2-4 Chinese characters starting with a known surname (2-5 with a compound surname)."""
    if not all("\u3400" <= c <= "\u9fff" for c in name):
        return False
    if name[:2] in COMPOUND_SURNAMES:
        return 3 <= len(name) <= 5
    return 2 <= len(name) <= 4 and name[0] in COMMON_SURNAMES


def chinese_pinyin(text: str, surname: bool = False) -> str:
    """Pinyin of Chinese text without tones; `surname=True` applies the surname reading table."""
    if surname and text in SURNAME_READINGS:
        return SURNAME_READINGS[text]
    return "".join(_char_pinyin(c) for c in text if not c.isspace())


def _latin_key(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())


# Honorifics written after a surname on a parcel or at a till (王女士, 李先生): a surname and a sex.
HONORIFICS: dict[str, str] = {"先生": "m", "女士": "f", "小姐": "f", "太太": "f", "夫人": "f"}


def split_honorific(name: str) -> tuple[str, str] | None:
    """(surname, 'm'/'f') of a surname followed by an honorific (王女士, 欧阳先生), else None."""
    for honorific, sex in HONORIFICS.items():
        if name.endswith(honorific):
            surname = name[: -len(honorific)]
            if surname in COMPOUND_SURNAMES or (len(surname) == 1 and surname in COMMON_SURNAMES):
                return surname, sex
    return None


def honorific_gender(name: str | None) -> str | None:
    """The sex an honorific states (李先生 -> 'm'), after traditional-to-simplified conversion."""
    if not name or not _CJK.search(name):
        return None
    parts = split_honorific(re.sub(r"\s+", "", _t2s()(name)))
    return parts[1] if parts else None


@lru_cache(maxsize=1)
def _pinyin_syllables() -> frozenset[str]:
    """Every toneless pinyin syllable (about 420), from pypinyin's character table."""
    import unicodedata

    from pypinyin.constants import PINYIN_DICT

    out = set()
    for readings in PINYIN_DICT.values():
        for reading in readings.split(","):
            bare = "".join(c for c in unicodedata.normalize("NFD", reading) if not unicodedata.combining(c))
            out.add(bare.replace("ü", "v"))
    return frozenset(out)


@lru_cache(maxsize=1)
def chinese_surname_readings() -> frozenset[str]:
    """The pinyin of the common and the compound Chinese surnames (wang, ouyang)."""
    return frozenset(chinese_pinyin(s, surname=True) for s in COMMON_SURNAMES | COMPOUND_SURNAMES)


@lru_cache(maxsize=65536)
def _is_pinyin(word: str, max_syllables: int = 3) -> bool:
    """True when `word` splits into 1..max_syllables pinyin syllables (zhang, xintian)."""
    if not word:
        return False
    if max_syllables == 0:
        return False
    syllables = _pinyin_syllables()
    return any(
        word[:k] in syllables and (k == len(word) or _is_pinyin(word[k:], max_syllables - 1))
        for k in range(min(6, len(word)), 0, -1)
    )


def split_pinyin_name(word: str) -> tuple[str, str] | None:
    """(surname, given) of a pinyin name written as one word (zhangwei -> zhang, wei): the longest
    surname reading whose rest reads as a one- to three-syllable given name."""
    if not word.isalpha() or not word.isascii() or not 3 <= len(word) <= 16:
        return None
    surnames = chinese_surname_readings()
    for k in range(min(8, len(word) - 1), 0, -1):
        if word[:k] in surnames and _is_pinyin(word[k:]):
            return word[:k], word[k:]
    return None


def standardize_name(
    name: str | None, given: str | None = None, family: str | None = None
) -> tuple[str | None, str | None]:
    """(display name, pinyin key "family given") from a full name or its parts, Chinese or Latin.

    The key always has exactly one space between the family and the given part (either may be
    empty), so comparators can split it back.

    Chinese is converted to simplified and read with surname overrides; Latin-script names are
    lower-cased letters. A Latin full name without parts is read given-first ("John Smith"), unless
    it has a comma ("Smith, John"); the comparators also try the swapped order.
    """
    if given or family:
        g = _t2s()(given or "") if _CJK.search(given or "") else (given or "")
        f = _t2s()(family or "") if _CJK.search(family or "") else (family or "")
        g, f = re.sub(r"\s+", "", g) if _CJK.search(g) else g.strip(), f.strip()
        if _CJK.search(f) or _CJK.search(g):
            f = re.sub(r"\s+", "", f)
            display = f + g
            key = f"{chinese_pinyin(f, surname=True)} {chinese_pinyin(g)}"
        else:
            display = " ".join(p for p in (g, f) if p).lower()
            key = f"{_latin_key(f)} {_latin_key(g)}"
        return (display or None), (key if key.strip() else None)
    if not name:
        return None, None
    if _CJK.search(name):
        simplified = re.sub(r"[\s·•・.]+", "", _t2s()(name))
        honorific = split_honorific(simplified)
        if honorific:
            # 王女士: the surname is evidence (the sex goes to gender), not a given name 女士.
            return None, f"{chinese_pinyin(honorific[0], surname=True)} "
        if _NAME_MASK.search(simplified):
            # A masked receiver name (宋**): the surname is evidence, the display name is not.
            family = _NAME_MASK.sub("", simplified)[:2]
            family = family if family in COMPOUND_SURNAMES else family[:1]
            return None, (f"{chinese_pinyin(family, surname=True)} " if family else None)
        if not is_plausible_chinese_name(simplified):
            return None, None
        fam, giv = split_chinese_name(simplified)
        key = f"{chinese_pinyin(fam, surname=True)} {chinese_pinyin(giv)}"
        return simplified, (key if key.strip() else None)
    lowered = re.sub(r"\s+", " ", name.strip().lower())
    if re.search(r"\d|[_@#*]", lowered):
        return None, None  # a handle (tb78211011175, linqiyan78769), not a name
    raw_tokens = name.split()
    if "," in lowered:
        fam_part, _, giv_part = lowered.partition(",")
    elif len(raw_tokens) == 1 and (pinyin := split_pinyin_name(lowered)):
        fam_part, giv_part = pinyin  # zhangwei: a Chinese name in pinyin, run together
    else:
        tokens = lowered.split(" ")
        fam_part, giv_part = tokens[-1], " ".join(tokens[:-1])
        if len(raw_tokens) == 2:
            first, last = raw_tokens
            surnames = chinese_surname_readings()
            # ZHANG Wei (a passport's upper-case surname), or Mao Xintian (only one part is a
            # surname's reading and both read as pinyin): the surname is written first.
            passport = first.isupper() and len(first) > 1 and not last.isupper()
            pinyin_first = (
                tokens[0] in surnames
                and tokens[1] not in surnames
                and _is_pinyin(tokens[0], 2)
                and _is_pinyin(tokens[1])
            )
            if passport or pinyin_first:
                fam_part, giv_part = tokens[0], tokens[1]
    display = re.sub(r"\s*,\s*", " ", lowered).strip()
    key = f"{_latin_key(fam_part)} {_latin_key(giv_part)}"
    return display or None, (key if key.strip() else None)


# --------------------------------------------------------------------------- phones


def standardize_phone(raw: str) -> tuple[str | None, str | None]:
    """(E.164 phone, masked mobile) from a raw phone string; default region CN.

    Country prefixes (+86, 0086, 86), separators and extensions are stripped. A masked marketplace
    mobile such as 138****5678 is partial evidence and never becomes a phone.
    """
    text = raw.strip()
    compact = re.sub(r"[\s\-().]", "", text)
    masked = _MASKED_MOBILE.match(re.sub(r"^(\+?86|0086)", "", compact))
    if masked:
        return None, f"{masked.group(1)}****{masked.group(2)}"
    compact = _EXTENSION.sub("", compact)
    digits = re.sub(r"^(\+86|0086|86)(?=1[3-9]\d{9}$)", "", compact)
    if _CN_MOBILE.match(digits):
        return "+86" + digits, None
    import phonenumbers

    try:
        parsed = phonenumbers.parse(compact if not compact.startswith("00") else "+" + compact[2:], "CN")
    except phonenumbers.NumberParseException:
        return None, None
    if not phonenumbers.is_valid_number(parsed):
        return None, None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), None


def mask_phone(e164: str) -> str | None:
    """The marketplace mask of a Chinese mobile in E.164 (+8613812345678 -> 138****5678)."""
    if e164.startswith("+86") and len(e164) == 14:
        national = e164[3:]
        return f"{national[:3]}****{national[-4:]}"
    return None


# --------------------------------------------------------------------------- email, dates, ids


def standardize_email(raw: str) -> str | None:
    """Lower-cased address with provider aliases canonicalized; None when it is not an address."""
    email = raw.strip().lower().replace("mailto:", "")
    if email.count("@") != 1:
        return None
    local, domain = email.split("@")
    domain = EMAIL_DOMAIN_ALIASES.get(domain, domain)
    if not local or "." not in domain:
        return None
    if domain in EMAIL_PLUS_TAGS:
        local = local.split("+", 1)[0]
    if domain in EMAIL_DOT_INSENSITIVE:
        local = local.replace(".", "")
    return f"{local}@{domain}" if local else None


_DATE_PATTERNS = (
    re.compile(r"^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?(?:[ T].*)?$"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
)
_DMY = re.compile(r"^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})$")


def standardize_birth_date(raw: str) -> date | None:
    """A date from YYYY-MM-DD, YYYYMMDD, YYYY/MM/DD, YYYY.MM.DD, 1990年1月2日 or DD/MM/YYYY."""
    text = raw.strip()
    for pattern in _DATE_PATTERNS:
        m = pattern.match(text)
        if m:
            y, mo, d = (int(g) for g in m.groups())
            break
    else:
        m = _DMY.match(text)
        if not m:
            return None
        d, mo, y = (int(g) for g in m.groups())
    try:
        value = date(y, mo, d)
    except ValueError:
        return None
    return value if 1900 <= value.year <= date.today().year else None


def resident_id_check_digit(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of an 18-digit resident id's first 17 digits."""
    total = int(np.dot(np.frombuffer(first17.encode(), dtype=np.uint8).astype(np.int64) - 48, _ID_WEIGHTS))
    return _ID_CHECK[total % 11]


def is_valid_resident_id(value: str | None) -> bool:
    """True for an 18-character resident id with a valid birth date and check digit."""
    if not value or len(value) != 18 or not value[:17].isdigit():
        return False
    if standardize_birth_date(value[6:14]) is None:
        return False
    return resident_id_check_digit(value[:17]) == value[17]


def standardize_id_number(raw: str) -> str | None:
    """Upper-cased id without separators; 15-digit resident ids are upgraded to 18 digits.

    Other identifiers (a foreign social security number, a mistyped id) are kept as generic
    evidence for fuzzy comparison; only `is_valid_resident_id` values act as hard identifiers.
    """
    value = re.sub(r"[\s\-]", "", raw).upper()
    if len(value) == 15 and value.isdigit():
        first17 = value[:6] + "19" + value[6:]
        return first17 + resident_id_check_digit(first17)
    return value[:18] or None


def standardize_member_no(raw: str) -> str | None:
    value = re.sub(r"[\s\-_]", "", raw).upper()
    return value or None


# --------------------------------------------------------------------------- addresses


@lru_cache(maxsize=1)
def _ambiguous_districts() -> frozenset[str]:
    """District names several cities have (朝阳区 is in Beijing and in Changchun)."""
    import cpca

    counts = Counter(info.name for info in cpca.ad_2_addr_dict.values() if info.rank == 2)
    return frozenset(name for name, n in counts.items() if n > 1)


def _parse_chinese_addresses(addresses: list[str]) -> pd.DataFrame:
    import cpca

    parsed = cpca.transform(addresses, pos_sensitive=True)
    # A line that names only an ambiguous district (朝阳区...) does not say its city: cpca's guess
    # would be evidence against the right one.
    guessed = (
        (parsed["省_pos"] < 0) & (parsed["市_pos"] < 0) & parsed["区"].isin(_ambiguous_districts())
    ).to_numpy()
    province = parsed["省"].where(parsed["省"].notna() & ~guessed, None)
    city = parsed["市"].where(parsed["市"].notna() & ~guessed, None)
    city = city.where(~((city == "市辖区") | (city == "县")), province)
    return pd.DataFrame(
        {
            "province": province,
            "city": city,
            "district": parsed["区"].where(parsed["区"].notna(), None),
            "address_detail": parsed["地址"].where(parsed["地址"].astype(bool), None),
        }
    )


PROVINCES: tuple[str, ...] = (
    "北京市", "天津市", "上海市", "重庆市", "河北省", "山西省", "辽宁省", "吉林省", "黑龙江省", "江苏省",
    "浙江省", "安徽省", "福建省", "江西省", "山东省", "河南省", "湖北省", "湖南省", "广东省", "海南省",
    "四川省", "贵州省", "云南省", "陕西省", "甘肃省", "青海省", "台湾省", "内蒙古自治区",
    "广西壮族自治区", "西藏自治区", "宁夏回族自治区", "新疆维吾尔自治区", "香港特别行政区", "澳门特别行政区",
)  # fmt: skip
_PROVINCE_BY_SHORT: dict[str, str] = {
    re.sub(r"(省|市|壮族自治区|回族自治区|维吾尔自治区|自治区|特别行政区)$", "", p): p for p in PROVINCES
}
_CITY_SUFFIXES = ("市", "盟", "地区", "区", "县", "自治州")


def _clean_region(value: str | None, level: str = "") -> str | None:
    """Simplified, full official form: 广东 -> 广东省, 上海 -> 上海市, 深圳 -> 深圳市 (level 'city')."""
    if value is None:
        return None
    if _CJK.search(value):
        text = _t2s()(value).strip()
        if level == "province":
            return _PROVINCE_BY_SHORT.get(text, text)
        # 杭州 is 杭州市, but 甘孜州 (an autonomous prefecture, short form) stays.
        prefecture = text.endswith("州") and len(text) > 2
        if level == "city" and not text.endswith(_CITY_SUFFIXES) and not prefecture:
            return text + "市"
        return text
    return re.sub(r"\s+", " ", value.lower()).strip() or None


# --------------------------------------------------------------------------- the frame


def _join_text(parts: Iterable[pd.Series], sep: str = " ") -> pd.Series:
    """The given parts of each row joined by `sep` (None where no part is given); column by column, not
    row by row (a DataFrame.apply over a million rows cost seconds)."""
    columns = list(parts)
    if not columns or len(columns[0]) == 0:
        return pd.Series([], dtype=object)
    joined: pd.Series | None = None
    for column in columns:
        text = column.astype(object).where(column.notna(), None).map(lambda v: None if v is None else str(v))
        if joined is None:
            joined = text
            continue
        both = joined.notna() & text.notna()
        joined = joined.where(text.isna(), text.where(~both, joined.astype(str) + sep + text.astype(str)))
    assert joined is not None
    joined = joined.astype(object).where(joined.notna(), None)
    return joined.where(joined.map(bool), None)


def standardize_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Standardize contract columns into `SourceIdentity`-shaped columns, one row per input row.

    Returns `STANDARD_COLUMNS`: record_id (as given), source, name, name_pinyin, nickname, phone (E.164
    or None), phone_masked ('138****5678'), phone_verified (bool), email, birth_date (date or None),
    gender ('m'/'f'/None), id_number, member_no, wechat_unionid, wechat_openid, province, city,
    district, address_detail, postcode. Missing/blank values are None. Never raises on bad values:
    an unparseable value becomes None.
    """
    if "record_id" not in df.columns:
        raise ValueError("column 'record_id' is required: add a unique id per row")
    out = pd.DataFrame(index=df.index)
    out["record_id"] = df["record_id"]
    out["source"] = _text(df, "source")

    name, given, family = _text(df, "name"), _text(df, "given_name"), _text(df, "family_name")
    parts = pd.Series(list(zip(name, given, family, strict=True)), index=df.index, dtype=object)
    names = _per_unique(parts, lambda t: standardize_name(*t))
    out["name"] = names.map(lambda t: t[0] if t else None)
    out["name_pinyin"] = names.map(lambda t: t[1] if t else None)
    # A screen name that is not a person's name (小云0521, tb7821) is kept, as a nickname.
    nickname = _text(df, "nickname")
    not_a_name = name.notna() & out["name"].isna() & out["name_pinyin"].isna()
    out["nickname"] = nickname.where(nickname.notna() | ~not_a_name, name)

    phones = _per_unique(_text(df, "phone"), standardize_phone)
    out["phone"] = phones.map(lambda t: t[0] if t else None)
    out["phone_masked"] = phones.map(lambda t: t[1] if t else None)
    verified = _text(df, "phone_verified").map(lambda v: v is not None and v.lower() in _TRUE)
    out["phone_verified"] = verified.astype(bool) & out["phone"].notna()

    out["email"] = _per_unique(_text(df, "email"), standardize_email)
    id_number = _per_unique(_text(df, "id_number"), standardize_id_number)
    out["birth_date"] = _per_unique(_text(df, "birth_date"), standardize_birth_date)
    gender = _text(df, "gender").map(lambda v: None if v is None else _GENDER.get(v.lower()))
    # A valid resident id carries the birth date and the sex (17th digit odd = male): fill the gaps.
    valid_id = id_number.map(is_valid_resident_id).astype(bool)
    id_birth = id_number[valid_id].map(lambda v: standardize_birth_date(v[6:14]))
    id_gender = id_number[valid_id].map(lambda v: "m" if int(v[16]) % 2 else "f")
    out["birth_date"] = out["birth_date"].where(out["birth_date"].notna(), id_birth.reindex(df.index))
    out["birth_date"] = out["birth_date"].astype(object).where(out["birth_date"].notna(), None)
    gender = gender.where(gender.notna(), id_gender.reindex(df.index))
    # 王女士 states the sex where nothing else does.
    polite = name.astype("string").str.endswith(tuple(HONORIFICS)).fillna(False).astype(bool)
    if polite.any():
        gender = gender.where(
            gender.notna() | ~polite, _per_unique(name.where(polite, None), honorific_gender)
        )
    out["gender"] = gender.astype(object).where(gender.notna(), None)
    out["id_number"] = id_number
    out["member_no"] = _per_unique(_text(df, "member_no"), standardize_member_no)
    out["wechat_unionid"] = _text(df, "wechat_unionid")
    out["wechat_openid"] = _text(df, "wechat_openid")

    province = _per_unique(_text(df, "province"), lambda v: _clean_region(v, "province"))
    city = _per_unique(_text(df, "city"), lambda v: _clean_region(v, "city"))
    district = _per_unique(_text(df, "district"), _clean_region)
    street = _join_text([_text(df, c) for c in ("street_number", "address_1", "address_2")])
    # Marketplaces mask the end of the line (科技路********): the visible prefix is the evidence.
    address = _text(df, "address").map(
        lambda v: None if v is None else _ADDRESS_MASK.sub("", v).strip() or None
    )
    detail = street.where(street.notna(), address)
    chinese = address.map(lambda v: v is not None and bool(_CJK.search(v))).astype(bool)
    if chinese.any():
        unique_addresses = pd.unique(address[chinese])
        parsed = _parse_chinese_addresses([_t2s()(a) for a in unique_addresses])
        parsed.index = pd.Index(unique_addresses)
        rows = parsed.reindex(address[chinese].to_numpy())
        rows.index = address[chinese].index
        # Explicit columns win over what the parser read from the free-text line.
        for column, series in (("province", province), ("city", city), ("district", district)):
            series.loc[chinese] = series[chinese].where(series[chinese].notna(), rows[column])
        parsed_detail = rows["address_detail"].where(
            rows[["province", "city", "district"]].notna().any(axis=1), address[chinese].map(_t2s())
        )
        detail.loc[chinese] = parsed_detail.where(street[chinese].isna(), street[chinese])
    latin_detail = ~detail.map(lambda v: v is not None and bool(_CJK.search(v))).astype(bool)
    detail = detail.where(
        ~latin_detail | detail.isna(), detail.map(lambda v: v and re.sub(r"\s+", " ", v.lower()))
    )
    municipality = province.isin(MUNICIPALITIES) & city.isna()
    city = city.where(~municipality, province)
    out["province"] = province.astype(object).where(province.notna(), None)
    out["city"] = city.astype(object).where(city.notna(), None)
    out["district"] = district.astype(object).where(district.notna(), None)
    out["address_detail"] = detail.astype(object).where(detail.notna(), None)
    out["postcode"] = _text(df, "postcode").map(lambda v: None if v is None else re.sub(r"\s", "", v))
    return out.reset_index(drop=True)[list(STANDARD_COLUMNS)]
