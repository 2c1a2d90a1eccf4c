"""Synthetic Chinese omnichannel person records with ground truth, for tests and benchmarks.

People get a name, mobile, birth date, city and sometimes an email and a resident id; each person
shows up in 1-4 channels, each channel carrying what it really carries (marketplace: receiver name,
often masked mobile, address; own app: member no., verified mobile, email; POS: phone at checkout;
WeChat: unionid and nickname), with realistic noise (formats, traditional characters, typos).
Contract columns plus `true_person_id`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from identity.standardize import resident_id_check_digit

SURNAMES = list(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
GIVEN = list(
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬燕彬鹏辉斌宇浩凯健俊帆帅旭宁龙林欣婷雪琳晨阳佳怡子轩梓涵一诺思源博文雨泽浩然梦瑶诗琪嘉欣天佑俊杰"
)
TRADITIONAL = {
    "伟": "偉",
    "丽": "麗",
    "军": "軍",
    "艳": "艷",
    "涛": "濤",
    "华": "華",
    "红": "紅",
    "鹏": "鵬",
    "辉": "輝",
    "张": "張",
    "刘": "劉",
    "陈": "陳",
    "杨": "楊",
    "黄": "黃",
    "赵": "趙",
    "吴": "吳",
}
CITIES = [
    ("上海市", "上海市", ["徐汇区", "浦东新区", "静安区", "闵行区", "杨浦区"]),
    ("北京市", "北京市", ["朝阳区", "海淀区", "东城区", "丰台区"]),
    ("广东省", "广州市", ["天河区", "越秀区", "海珠区", "番禺区"]),
    ("广东省", "深圳市", ["南山区", "福田区", "宝安区", "龙岗区"]),
    ("浙江省", "杭州市", ["西湖区", "上城区", "滨江区", "余杭区"]),
    ("江苏省", "南京市", ["玄武区", "鼓楼区", "建邺区"]),
    ("四川省", "成都市", ["锦江区", "武侯区", "青羊区", "高新区"]),
    ("湖北省", "武汉市", ["江汉区", "武昌区", "洪山区"]),
]
STREETS = list("人民中山解放建设和平长江黄河新华胜利文化")
ROADS = ["路", "大道", "街"]
REGION_CODES = ["310104", "110105", "440106", "440305", "330106", "320102", "510104", "420103"]
SOURCES = ["tmall", "jd", "app", "pos", "wechat"]


def _id_number(rng: np.random.Generator, region: str, birth: pd.Timestamp, male: bool) -> str:
    seq = int(rng.integers(0, 100)) * 10 + (
        int(rng.choice([1, 3, 5, 7, 9])) if male else int(rng.choice([0, 2, 4, 6, 8]))
    )
    first17 = f"{region}{birth:%Y%m%d}{seq:03d}"
    return first17 + resident_id_check_digit(first17)


def synthetic_people(people: int, seed: int = 42, records_per_person: float = 1.8) -> pd.DataFrame:
    """Records of `people` synthetic persons (about `records_per_person` each) with `true_person_id`."""
    rng = np.random.default_rng(seed)
    surname_w = 1.0 / np.arange(1, len(SURNAMES) + 1) ** 0.9
    surname_w /= surname_w.sum()
    family = rng.choice(SURNAMES, people, p=surname_w)
    given_len = rng.choice([1, 2], people, p=[0.35, 0.65])
    g1 = rng.choice(GIVEN, people)
    g2 = rng.choice(GIVEN, people)
    given = np.where(given_len == 1, g1, np.char.add(g1.astype(str), g2.astype(str)))
    mobile = rng.choice(list("3456789"), people)
    phone_digits = np.char.add(
        np.char.add("1", mobile.astype(str)), np.char.zfill(rng.integers(0, 10**9, people).astype(str), 9)
    )
    birth = pd.to_datetime("1950-01-01") + pd.to_timedelta(rng.integers(0, 365 * 55, people), unit="D")
    male = rng.random(people) < 0.5
    city_idx = rng.integers(0, len(CITIES), people)
    has_email = rng.random(people) < 0.4
    has_id = rng.random(people) < 0.25
    n_records = np.minimum(1 + rng.poisson(records_per_person - 1, people), 5)

    rows: list[dict[str, object]] = []
    record_no = 0
    for p in range(people):
        prov, city, districts = CITIES[city_idx[p]]
        district = districts[p % len(districts)]
        street = f"{STREETS[p % len(STREETS)]}{STREETS[(p // 7) % len(STREETS)]}{ROADS[p % 3]}{(p * 7) % 999 + 1}号"
        name = f"{family[p]}{given[p]}"
        phone = str(phone_digits[p])
        email = f"{phone[-6:]}{p}@qq.com" if has_email[p] else None
        id_number = _id_number(rng, REGION_CODES[city_idx[p]], birth[p], bool(male[p])) if has_id[p] else None
        sources = rng.choice(SOURCES, int(n_records[p]), replace=int(n_records[p]) > len(SOURCES))
        for source in sources:
            record_no += 1
            r = rng.random(8)
            shown_name = name
            if r[0] < 0.05 and len(shown_name) > 1:  # a typo in the given name
                shown_name = shown_name[:-1] + str(rng.choice(GIVEN))
            elif r[0] < 0.12:
                shown_name = "".join(TRADITIONAL.get(c, c) for c in shown_name)
            row: dict[str, object] = {
                "record_id": f"r{record_no}",
                "source": source,
                "true_person_id": p,
                "name": shown_name,
            }
            if source in ("tmall", "jd"):
                row["phone"] = f"{phone[:3]}****{phone[-4:]}" if r[1] < 0.5 else phone
                row["address"] = (
                    f"{prov}{city}{district}{street}" if r[2] < 0.7 else f"{city}{district}{street}"
                )
            elif source == "app":
                row["phone"] = f"+86 {phone[:3]} {phone[3:7]} {phone[7:]}" if r[1] < 0.3 else phone
                row["phone_verified"] = "true"
                row["member_no"] = f"M{p:08d}"
                row["email"] = email.upper() if email and r[2] < 0.2 else email
                row["birth_date"] = (
                    birth[p].strftime("%Y%m%d") if r[3] < 0.5 else birth[p].strftime("%Y-%m-%d")
                )
                row["gender"] = "男" if male[p] else "女"
                row["id_number"] = id_number
                row["city"], row["province"] = city, prov
            elif source == "pos":
                row["phone"] = phone if r[1] < 0.9 else f"{phone[:-1]}{(int(phone[-1]) + 1) % 10}"
                row["city"] = city
            else:
                row["wechat_unionid"] = f"o{p:010d}"
                row["nickname"] = shown_name if r[1] < 0.5 else f"{shown_name}~"
                row["name"] = shown_name if r[2] < 0.6 else None
                row["phone"] = phone if r[3] < 0.3 else None
                row["city"] = city if r[4] < 0.5 else None
            rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the noisy model (issue 16)

# Given-name characters and same-reading characters people type instead (sound-alike typos: an
# input method offers every character of the reading, and the first one is not always yours).
HOMOPHONES: dict[str, str] = {
    "伟": "威", "芳": "方", "娜": "那", "英": "瑛", "敏": "珉", "静": "婧", "丽": "莉", "强": "蔷",
    "磊": "蕾", "军": "君", "洋": "阳", "勇": "咏", "杰": "洁", "明": "铭", "超": "潮", "涛": "韬",
    "平": "萍", "刚": "钢", "华": "桦", "玲": "铃", "鹏": "朋", "辉": "晖", "斌": "彬", "宇": "雨",
    "浩": "昊", "凯": "恺", "健": "建", "俊": "骏", "帆": "凡", "宁": "凝", "龙": "隆", "林": "霖",
    "欣": "馨", "婷": "亭", "雪": "学", "晨": "辰", "佳": "嘉", "怡": "仪", "轩": "萱", "涵": "含",
    "源": "元", "博": "波", "文": "雯", "泽": "则", "然": "冉", "梦": "孟", "瑶": "遥", "琪": "琦",
    "天": "田", "佑": "友", "燕": "艳", "红": "虹", "霞": "夏", "萍": "平", "秀": "绣", "兰": "岚",
}  # fmt: skip
# More traditional forms than TRADITIONAL, for names and addresses (OpenCC reads them back).
TRADITIONAL_MORE: dict[str, str] = {
    **TRADITIONAL,
    "区": "區", "东": "東", "门": "門", "广": "廣", "浙": "浙", "苏": "蘇", "汉": "漢", "号": "號",
    "兰": "蘭", "龙": "龍", "凯": "凱", "鹏": "鵬", "马": "馬", "孙": "孫", "郑": "鄭", "谢": "謝",
    "罗": "羅", "梁": "梁", "冯": "馮", "邓": "鄧", "许": "許", "韩": "韓", "汇": "匯", "静": "靜",
    "浦": "浦", "杨": "楊", "闵": "閔", "朝": "朝", "丰": "豐", "台": "臺", "海": "海", "湾": "灣",
    "岗": "崗", "宝": "寶", "滨": "濱", "余": "餘", "杭": "杭", "鼓": "鼓", "楼": "樓", "锦": "錦",
    "长": "長", "华": "華", "胜": "勝", "新": "新", "设": "設", "阳": "陽", "连": "連", "兴": "興",
}  # fmt: skip
# Surname readings for the pinyin forms (pypinyin's everyday reading differs for a few).
_PINYIN_SURNAME_FIX = {"曾": "zeng", "覃": "qin", "单": "shan", "任": "ren", "沈": "shen"}
_HONORIFIC = {"m": ["先生"], "f": ["女士", "小姐"]}
_CHANNEL_NAMES = ["tmall", "jd", "app", "pos", "wechat"]


def _pinyin(text: str) -> list[str]:
    from pypinyin import Style, lazy_pinyin

    return [s.lower() for s in lazy_pinyin(text, style=Style.NORMAL)]


def _pinyin_name(family: str, given: str, form: int) -> str:
    """A Chinese name written in pinyin, in the forms real forms get: `Zhang Wei`, `zhangwei`,
    `Wei Zhang` (given first), `ZHANG Wei` (passport style)."""
    fam = _PINYIN_SURNAME_FIX.get(family) or "".join(_pinyin(family))
    giv = "".join(_pinyin(given))
    if form == 0:
        return f"{fam.title()} {giv.title()}"
    if form == 1:
        return f"{fam}{giv}"
    if form == 2:
        return f"{giv.title()} {fam.title()}"
    return f"{fam.upper()} {giv.title()}"


def _phone_format(phone: str, form: int) -> str:
    """One 11-digit mobile as people type it: +86, 86, spaces, dashes."""
    forms = (
        phone,
        f"+86 {phone[:3]} {phone[3:7]} {phone[7:]}",
        f"86{phone}",
        f"{phone[:3]}-{phone[3:7]}-{phone[7:]}",
        f"{phone[:3]} {phone[3:7]} {phone[7:]}",
        f"+86-{phone}",
    )
    return forms[form % len(forms)]


def _birth_format(birth: pd.Timestamp, form: int) -> str:
    forms = (
        f"{birth.year}年{birth.month}月{birth.day}日",
        f"{birth.year}/{birth.month}/{birth.day}",
        f"{birth:%Y%m%d}",
        f"{birth:%Y-%m-%d}",
    )
    return forms[form % len(forms)]


def _traditional(text: str) -> str:
    return "".join(TRADITIONAL_MORE.get(c, c) for c in text)


def noisy_omnichannel_people(n: int, seed: int = 42) -> tuple[pd.DataFrame, np.ndarray]:
    """Records of `n` synthetic persons carrying the noise of real Chinese retail data, and the
    true person of each record (same order). Contract columns (docs/identity.md).

    On top of `synthetic_people`'s population: unverified phones typed at a till or given as a
    delivery receiver; masked marketplace mobiles (138****5678); names in pinyin (Zhang Wei,
    zhangwei), traditional characters, sound-alike typos and surname + honorific (王女士, 李先生);
    phones with +86, 86, spaces and dashes; birthdays as 1988年3月5日, 1988/3/5, 19880305; addresses
    in traditional characters and with or without the province and city; upper-case e-mail; the same
    person twice in one channel (two Tmall accounts, two POS member cards); households of two or
    three different people sharing a delivery address and a phone; a store's own phone typed in for
    customers who gave none.
    """
    rng = np.random.default_rng(seed)
    surname_w = 1.0 / np.arange(1, len(SURNAMES) + 1) ** 0.9
    surname_w /= surname_w.sum()
    family = rng.choice(SURNAMES, n, p=surname_w)
    two_char = rng.random(n) < 0.65
    g1, g2 = rng.choice(GIVEN, n), rng.choice(GIVEN, n)
    given = [str(a) + str(b) if two else str(a) for a, b, two in zip(g1, g2, two_char, strict=True)]
    prefix = rng.choice(["13", "15", "17", "18", "19"], n)
    phones = [f"{p}{d:09d}" for p, d in zip(prefix, rng.integers(0, 10**9, n), strict=True)]
    birth = pd.to_datetime("1955-01-01") + pd.to_timedelta(rng.integers(0, 365 * 50, n), unit="D")
    male = rng.random(n) < 0.5
    city_idx = rng.integers(0, len(CITIES), n)
    has_email = rng.random(n) < 0.4
    has_id = rng.random(n) < 0.2
    streets = [
        f"{STREETS[int(a)]}{STREETS[int(b)]}{ROADS[int(c)]}{int(d)}号{int(e)}栋{int(f)}室"
        for a, b, c, d, e, f in zip(
            rng.integers(0, len(STREETS), n),
            rng.integers(0, len(STREETS), n),
            rng.integers(0, len(ROADS), n),
            rng.integers(1, 999, n),
            rng.integers(1, 30, n),
            rng.integers(101, 2999, n),
            strict=True,
        )
    ]
    districts = [
        CITIES[c][2][int(k) % len(CITIES[c][2])] for c, k in zip(city_idx, rng.integers(0, 5, n), strict=True)
    ]
    # Households: 2-3 consecutive persons share the first one's address and delivery phone.
    household = np.arange(n)
    p = 0
    while p < n - 3:
        if rng.random() < 0.2:
            size = int(rng.choice([2, 3], p=[0.7, 0.3]))
            for q in range(p + 1, p + size):
                household[q] = p
                city_idx[q], districts[q], streets[q] = city_idx[p], districts[p], streets[p]
                if rng.random() < 0.5:  # a child or a sibling: the same surname
                    family[q] = family[p]
            p += size
        else:
            p += 1
    store_phone = {c: f"139{c:04d}8888" for c in range(len(CITIES))}  # one per city's store

    rows: list[dict[str, object]] = []
    truth: list[int] = []
    for person in range(n):
        prov, city, _ = CITIES[city_idx[person]]
        fam, giv, phone = str(family[person]), given[person], phones[person]
        gender = "m" if male[person] else "f"
        home = household[person]
        delivery_phone = phones[home]  # a household orders with one phone
        email = (
            f"{''.join(_pinyin(fam + giv))}{person % 997}@{['qq.com', '163.com', 'gmail.com'][person % 3]}"
        )
        id_number = _id_number(rng, REGION_CODES[city_idx[person]], birth[person], bool(male[person]))
        k = int(min(1 + rng.poisson(1.0), 5))
        channels = [str(c) for c in rng.choice(_CHANNEL_NAMES, k, replace=False)]
        if rng.random() < 0.08:  # two accounts, or two member cards, in one channel
            channels.append(str(rng.choice(["tmall", "pos", "jd"])))
        for channel in channels:
            r = rng.random(12)
            name = _noisy_name(fam, giv, gender, channel, rng)
            row: dict[str, object] = {"record_id": f"n{len(rows) + 1}", "source": channel, "name": name}
            if channel in ("tmall", "jd"):
                receiver = delivery_phone if (home != person and r[0] < 0.5) else phone
                row["phone"] = (
                    f"{receiver[:3]}****{receiver[-4:]}"
                    if r[1] < 0.45
                    else _phone_format(receiver, int(r[2] * 6))
                )
                row["address"] = _noisy_address(prov, city, districts[person], streets[person], r[3], r[4])
            elif channel == "app":
                row["phone"] = _phone_format(phone, int(r[0] * 6))
                row["phone_verified"] = "true"
                row["member_no"] = f"M{person:08d}"
                if has_email[person]:
                    row["email"] = email.upper() if r[1] < 0.3 else email
                row["birth_date"] = _birth_format(birth[person], int(r[2] * 4))
                row["gender"] = "男" if male[person] else "女"
                row["id_number"] = id_number if has_id[person] else None
                row["city"] = city if r[3] < 0.7 else None
                row["province"] = prov if r[3] < 0.5 else None
                if r[4] < 0.4:
                    row["address"] = _noisy_address(
                        prov, city, districts[person], streets[person], r[5], r[6]
                    )
            elif channel == "pos":
                if r[0] < 0.04:
                    row["phone"] = store_phone[int(city_idx[person])]  # the cashier typed the store's
                elif r[0] < 0.08:
                    row["phone"] = f"{phone[:-1]}{(int(phone[-1]) + 1) % 10}"  # a typo at the till
                else:
                    row["phone"] = _phone_format(phone, int(r[1] * 6))
                row["member_no"] = f"P{person:07d}{int(r[2] * 10)}"  # a card per sign-up
                row["city"] = city
                if r[3] < 0.4:
                    row["birth_date"] = _birth_format(birth[person], int(r[4] * 4))
                if r[5] < 0.3 and has_email[person]:
                    row["email"] = email.upper()
            else:
                row["wechat_unionid"] = f"o{person:010d}"
                row["nickname"] = name if r[0] < 0.5 else f"{name}~"
                row["name"] = name if r[1] < 0.7 else None
                row["city"] = city if r[4] < 0.6 else None
                # A mini-program member authorises the phone, or at least a real name and a city:
                # a profile with neither carries no evidence anyone could link.
                authorised = r[3] < 0.5 or row["name"] is None or row["city"] is None
                row["phone"] = _phone_format(phone, int(r[2] * 6)) if authorised else None
            rows.append(row)
            truth.append(person)
    return pd.DataFrame(rows), np.asarray(truth, dtype=np.int64)


def _noisy_name(family: str, given: str, gender: str, channel: str, rng: np.random.Generator) -> str:
    r = rng.random(2)
    if channel in ("tmall", "jd", "pos") and r[0] < 0.12:
        return family + str(rng.choice(_HONORIFIC[gender]))  # 王女士 on a parcel, 李先生 at the till
    if r[0] < 0.24:
        return _pinyin_name(family, given, int(r[1] * 4))
    if r[0] < 0.32:
        return _traditional(family + given)
    if r[0] < 0.38:
        i = int(r[1] * len(given))
        return family + given[:i] + HOMOPHONES.get(given[i], given[i]) + given[i + 1 :]
    return family + given


def _noisy_address(prov: str, city: str, district: str, street: str, r_form: float, r_script: float) -> str:
    if prov == city:  # a municipality: 上海市徐汇区..., never 上海市上海市
        forms = (f"{city}{district}{street}", f"{city[:-1]}{district}{street}", f"{district}{street}")
    else:
        forms = (f"{prov}{city}{district}{street}", f"{city}{district}{street}", f"{district}{street}")
    address = forms[min(int(r_form * 3), 2)]
    return _traditional(address) if r_script < 0.2 else address
