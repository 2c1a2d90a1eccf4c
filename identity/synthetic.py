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
