"""The simulated customers and the source identities each channel knows them by.

A person is a pure function of (seed, index). Each person shows up in one to four channels; each
channel exposes a different, noisy slice of them (masked marketplace mobiles, nicknames, traditional
characters, homophone typos, missing fields). The exposed slice is built once here and both the feeds
and the ground truth read it, so the truth is exactly what the channels serve.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache

from sync.simulator.seeding import row_random, stream_key, token
from sync.simulator.vocabulary import (
    COMMON_NAMES,
    COMMUNITIES,
    DISTRICTS,
    GIVEN_FEMALE,
    GIVEN_MALE,
    HOMOPHONES,
    NICK_TAILS,
    NICK_WORDS,
    SURNAME_PINYIN,
    SURNAMES,
    TRADITIONAL,
    District,
)

CHANNELS: tuple[str, ...] = ("tmall", "jd", "app", "wechat", "weibo", "pos")
_CHANNEL_WEIGHTS = (0.50, 0.30, 0.45, 0.40, 0.15, 0.35)
_CHANNEL_COUNT_WEIGHTS = (0.35, 0.35, 0.20, 0.10)  # one, two, three, four channels
_MOBILE_PREFIXES = (
    "130",
    "131",
    "132",
    "133",
    "135",
    "136",
    "137",
    "138",
    "139",
    "150",
    "151",
    "152",
    "155",
    "157",
    "158",
    "159",
    "180",
    "181",
    "182",
    "185",
    "186",
    "187",
    "188",
    "189",
    "191",
    "193",
    "195",
    "198",
    "199",
)
_EMAIL_DOMAINS = ("163.com", "qq.com", "126.com", "sina.com", "gmail.com", "outlook.com", "foxmail.com")
_EMAIL_TYPOS = {"163.com": "136.com", "qq.com": "qq.con", "gmail.com": "gmial.com", "126.com": "126.cm"}
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_HEX = "0123456789abcdef"
# Placeholder numbers cashiers type when a shopper will not give theirs: they belong to nobody.
POS_DUMMY_PHONES: tuple[str, ...] = ("13800000000", "13888888888", "18888888888")
IDENTITY_COLUMNS: tuple[str, ...] = (
    "record_id",
    "source",
    "name",
    "phone",
    "email",
    "birth_date",
    "gender",
    "id_number",
    "member_no",
    "wechat_unionid",
    "address",
    "district",
    "city",
    "province",
    "true_person_id",
)


@dataclass(frozen=True)
class Person:
    """One real customer, before any channel has mangled them."""

    index: int
    person_id: str
    name: str
    surname: str
    pinyin: str
    gender: str
    birth_date: date
    mobile: str
    marketplace_mobile: str  # usually the same number; some buyers use a second SIM on marketplaces
    email: str | None
    place: District
    address: str
    id_number: str
    member_no: str
    unionid: str
    channels: tuple[str, ...]


@dataclass(frozen=True)
class SourceIdentity:
    """A person as one channel exposes them. `fields` holds the identity-contract columns exactly as
    the channel serves them; `extra` the channel-specific values the feeds also need."""

    channel: str
    external_id: str
    person: int
    fields: dict[str, str | None]
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def record_id(self) -> str:
        """`<channel>:<external id>`, the ground truth's key."""
        return f"{self.channel}:{self.external_id}"


def id_check_digit(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character of a resident identity card number."""
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return "10X98765432"[total % 11]


def mask_mobile(mobile: str) -> str:
    """`13812345678` -> `138****5678`, as marketplaces show receivers."""
    return f"{mobile[:3]}****{mobile[-4:]}"


def mask_name(name: str) -> str:
    """`张伟` -> `张*`: marketplaces keep the first character only."""
    return name[:1] + "*" * max(1, len(name) - 1)


def _bijective_suffix(n: int, seed: int) -> int:
    # An odd multiplier not divisible by 5 is invertible mod 10^8: distinct people, distinct numbers.
    return (n * 2654435761 + seed * 7919 + 12345) % 100_000_000


def _mobile(rng: random.Random, n: int, seed: int) -> str:
    number = rng.choice(_MOBILE_PREFIXES) + f"{_bijective_suffix(n, seed):08d}"
    return "13900000001" if number in POS_DUMMY_PHONES else number


_SURNAME_NAMES = [p[0] for p in SURNAMES]
# Cumulative weights computed once: random.choices would rebuild them on every call.
_SURNAME_CUM = list(itertools.accumulate(p[1] for p in SURNAMES))
_CHANNEL_CUM = list(itertools.accumulate(_CHANNEL_WEIGHTS))
_COUNT_CUM = list(itertools.accumulate(_CHANNEL_COUNT_WEIGHTS))


def _address(seed: int, index: int) -> tuple[District, str]:
    rng = row_random(stream_key(seed, "address"), index)
    place = rng.choice(DISTRICTS)
    street = rng.choice(place.streets)
    address = (
        f"{street}{rng.randint(1, 399)}号{rng.choice(COMMUNITIES)}"
        f"{rng.randint(1, 30)}栋{rng.randint(1, 4)}单元{rng.randint(2, 33)}{rng.randint(1, 4):02d}"
    )
    return place, address


def _household_head(seed: int, index: int) -> int:
    """Odd-numbered people share the address of the one before them in about 12% of pairs."""
    if index % 2 == 1 and row_random(stream_key(seed, "household"), index // 2).random() < 0.12:
        return index - 1
    return index


def make_person(seed: int, index: int) -> Person:
    """Person `index` of the population generated from `seed`."""
    rng = row_random(stream_key(seed, "person"), index)
    gender = "m" if rng.random() < 0.5 else "f"
    if rng.random() < 0.05:
        common = [c for c in COMMON_NAMES if c[1] == gender]
        name, _, pinyin = rng.choice(common)
        surname = name[0]
    else:
        surname = rng.choices(_SURNAME_NAMES, cum_weights=_SURNAME_CUM)[0]
        pool = GIVEN_MALE if gender == "m" else GIVEN_FEMALE
        given = [rng.choice(pool) for _ in range(1 if rng.random() < 0.3 else 2)]
        name = surname + "".join(g[0] for g in given)
        pinyin = SURNAME_PINYIN[surname] + "".join(g[1] for g in given)
    birth = date(1960, 1, 1) + timedelta(days=rng.randint(0, 46 * 365))
    mobile = _mobile(rng, index, seed)
    marketplace_mobile = _mobile(rng, index + 50_000_000, seed) if rng.random() < 0.03 else mobile
    email: str | None = None
    if rng.random() < 0.55:
        if rng.random() < 0.3:
            email = f"{100000000 + _bijective_suffix(index, seed + 1) * 7 % 900_000_000}@qq.com"
        else:
            email = f"{pinyin}{1000 + index}@{rng.choice(_EMAIL_DOMAINS)}"
    place, address = _address(seed, _household_head(seed, index))
    birthplace = place if rng.random() < 0.7 else rng.choice(DISTRICTS)
    sequence = rng.randint(0, 99) * 10 + (
        rng.choice((1, 3, 5, 7, 9)) if gender == "m" else rng.choice((0, 2, 4, 6, 8))
    )
    first17 = f"{birthplace.code}{birth:%Y%m%d}{sequence:03d}"
    key = stream_key(seed, "ids")
    count = rng.choices((1, 2, 3, 4), cum_weights=_COUNT_CUM)[0]
    chosen: list[str] = []
    while len(chosen) < count:
        pick = rng.choices(CHANNELS, cum_weights=_CHANNEL_CUM)[0]
        if pick not in chosen:
            chosen.append(pick)
    if len(chosen) >= 2 and {"wechat", "weibo"} & set(chosen) and "app" not in chosen:
        # A follower or fan who also buys is, for this brand, a member: the mini-program login is
        # what ties an official-account openid (unionid) or a Weibo fan (real name) to a customer.
        if len(chosen) < 4:
            chosen.append("app")
        else:
            chosen[next(n for n, c in enumerate(chosen) if c not in ("wechat", "weibo"))] = "app"
    return Person(
        index=index,
        person_id=f"P{index:06d}",
        name=name,
        surname=surname,
        pinyin=pinyin,
        gender=gender,
        birth_date=birth,
        mobile=mobile,
        marketplace_mobile=marketplace_mobile,
        email=email,
        place=place,
        address=address,
        id_number=first17 + id_check_digit(first17),
        member_no=f"M{_bijective_suffix(index, seed + 2):08d}",
        unionid="o" + token(key, index, 1, 27, _B64),
        channels=tuple(c for c in CHANNELS if c in chosen),
    )


def _traditional(name: str) -> str:
    return "".join(TRADITIONAL.get(ch, ch) for ch in name)


def _typo(rng: random.Random, name: str) -> str:
    spots = [i for i, ch in enumerate(name) if i > 0 and ch in HOMOPHONES]
    if not spots:
        return name
    i = rng.choice(spots)
    return name[:i] + HOMOPHONES[name[i]] + name[i + 1 :]


def _street(address: str) -> str:
    """The street name: what survives marketplace address masking."""
    match = re.match(r"\D+", address)
    return match.group(0) if match else ""


def _nick(rng: random.Random, person: Person) -> str:
    roll = rng.random()
    if roll < 0.3:
        return f"tb{rng.randint(10000000, 99999999)}"
    if roll < 0.5:
        return f"{person.pinyin}{person.birth_date:%y}"
    return rng.choice(NICK_WORDS) + rng.choice(NICK_WORDS) + rng.choice(NICK_TAILS)


def _tmall(seed: int, p: Person) -> SourceIdentity:
    key = stream_key(seed, "tmall-id")
    rng = row_random(key, p.index)
    state = p.place.province_short if p.place.municipality else p.place.province
    masked_address = f"{_street(p.address)}{'*' * 8}"
    return SourceIdentity(
        channel="tmall",
        external_id="AAH" + token(key, p.index, 1, 21, _B64.replace("-", "").replace("_", "")),
        person=p.index,
        fields={
            "name": mask_name(p.name),
            "phone": mask_mobile(p.marketplace_mobile),
            "address": masked_address,
            "district": p.place.district,
            "city": p.place.city,
            "province": state,
        },
        extra={"nick": _nick(rng, p)[:1] + "**", "oaid": token(key, p.index, 2, 32, _B64[:62])},
    )


def _jd(seed: int, p: Person) -> SourceIdentity:
    key = stream_key(seed, "jd-id")
    pl = p.place
    full_address = f"{pl.province_short}{pl.city}{pl.district}{_street(p.address)}{'*' * 6}"
    return SourceIdentity(
        channel="jd",
        # JD's stable buyer id is `open_id_buyer` (what the connector keys a buyer by); the pin is a login
        # name the feed also carries.
        external_id=token(key, p.index, 2, 32, _B64[:62]),
        person=p.index,
        fields={
            "name": mask_name(p.name),
            "phone": mask_mobile(p.marketplace_mobile),
            "address": full_address,
            "district": pl.district,
            "city": pl.city,
            "province": pl.province_short,
        },
        extra={"pin": "jd_" + token(key, p.index, 1, 12, _HEX)},
    )


def _app(seed: int, p: Person) -> SourceIdentity:
    key = stream_key(seed, "app-id")
    rng = row_random(key, p.index)
    name: str | None = p.name
    roll = rng.random()
    if roll < 0.12:
        name = _traditional(p.name)
    elif roll < 0.17:
        name = _typo(rng, p.name)
    elif roll < 0.20:
        name = None
    email = p.email
    if email and rng.random() < 0.05:
        local, domain = email.split("@")
        email = f"{local}@{_EMAIL_TYPOS.get(domain, domain)}"
    has_address = rng.random() < 0.65
    address = p.address if has_address else None
    if address and "号" in address and rng.random() < 0.15:
        # Members often type only the estate and the flat: "阳光花园3栋1单元1203".
        address = address[address.index("号") + 1 :]
    # Members who signed in through the mini-program carry the unionid the official account also sees.
    bound = "wechat" in p.channels or rng.random() < 0.1
    return SourceIdentity(
        channel="app",
        external_id=p.member_no,
        person=p.index,
        fields={
            "name": name,
            "phone": p.mobile,
            "email": email,
            "birth_date": p.birth_date.isoformat() if rng.random() < 0.7 else None,
            "gender": p.gender if rng.random() < 0.85 else None,
            "id_number": p.id_number if rng.random() < 0.25 else None,
            "member_no": p.member_no,
            "wechat_unionid": p.unionid if bound else None,
            "address": address,
            "district": p.place.district if has_address else None,
            "city": p.place.city if has_address or rng.random() < 0.5 else None,
            "province": p.place.province if has_address else None,
        },
        extra={"mini_openid": "o" + token(key, p.index, 3, 27, _B64)},
    )


def _wechat(seed: int, p: Person) -> SourceIdentity:
    key = stream_key(seed, "wechat-id")
    rng = row_random(key, p.index)
    # Bound to the Open Platform for members (the app logs in with WeChat); not always for the rest.
    unionid = p.unionid if "app" in p.channels or rng.random() < 0.85 else None
    return SourceIdentity(
        channel="wechat",
        external_id="o" + token(key, p.index, 1, 27, _B64),
        person=p.index,
        fields={"wechat_unionid": unionid},
    )


def _weibo(seed: int, p: Person) -> SourceIdentity:
    key = stream_key(seed, "weibo-id")
    rng = row_random(key, p.index)
    roll = rng.random()
    # Fans who also shop mostly post under their real name; the rest hide behind nicknames.
    real = 0.95 if len(p.channels) >= 2 else 0.3
    if roll < real * 0.88:
        screen_name = p.name
    elif roll < real:
        screen_name = _traditional(p.name)
    else:
        screen_name = _nick(rng, p) + str(rng.randint(1, 999))
    pl = p.place
    second = pl.district if pl.municipality else pl.city.removesuffix("市")
    return SourceIdentity(
        channel="weibo",
        external_id=str(5_000_000_000 + int(token(key, p.index, 1, 9, "0123456789"))),
        person=p.index,
        fields={
            "name": screen_name,
            "gender": p.gender,
            "province": pl.province_short,
            "city": None if pl.municipality else second,
            "district": second if pl.municipality else None,
        },
        extra={"location": f"{pl.province_short} {second}"},
    )


def _pos(seed: int, p: Person) -> SourceIdentity:
    rng = row_random(stream_key(seed, "pos-id"), p.index)
    if "app" in p.channels and rng.random() < 0.5:
        return SourceIdentity("pos", p.member_no, p.index, {"member_no": p.member_no}, {"card": "1"})
    return SourceIdentity("pos", p.mobile, p.index, {"phone": p.mobile})


_BUILDERS = {"tmall": _tmall, "jd": _jd, "app": _app, "wechat": _wechat, "weibo": _weibo, "pos": _pos}


@dataclass(frozen=True)
class Population:
    """All people of one (seed, size) and, per channel, its source identities in a fixed order."""

    seed: int
    people: tuple[Person, ...]
    by_channel: dict[str, tuple[SourceIdentity, ...]]

    def wechat_by_openid(self) -> dict[str, SourceIdentity]:
        """The official account's followers by openid."""
        return _by_openid(self)

    def first_seen_order(self, channel: str) -> tuple[SourceIdentity, ...]:
        """The channel's identities in the order the first feed rows introduce them (a seeded shuffle,
        so early rows are not sorted by person)."""
        return _shuffled(self, channel)


@lru_cache(maxsize=8)
def population(seed: int, people: int) -> Population:
    """The population for (seed, people); cached because every feed and the truth read it."""
    persons = tuple(make_person(seed, i) for i in range(people))
    by_channel = {ch: tuple(_BUILDERS[ch](seed, p) for p in persons if ch in p.channels) for ch in CHANNELS}
    return Population(seed, persons, by_channel)


_SHUFFLES: dict[tuple[int, int, str], tuple[SourceIdentity, ...]] = {}
_OPENIDS: dict[tuple[int, int], dict[str, SourceIdentity]] = {}


def _by_openid(pop: Population) -> dict[str, SourceIdentity]:
    cache_key = (pop.seed, len(pop.people))
    if cache_key not in _OPENIDS:
        _OPENIDS[cache_key] = {s.external_id: s for s in pop.by_channel["wechat"]}
    return _OPENIDS[cache_key]


def _shuffled(pop: Population, channel: str) -> tuple[SourceIdentity, ...]:
    cache_key = (pop.seed, len(pop.people), channel)
    if cache_key not in _SHUFFLES:
        items = list(pop.by_channel[channel])
        random.Random(stream_key(pop.seed, f"first-seen:{channel}")).shuffle(items)
        _SHUFFLES[cache_key] = tuple(items)
    return _SHUFFLES[cache_key]
