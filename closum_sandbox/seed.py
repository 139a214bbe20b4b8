"""Deterministic, realistic Portuguese data for the sandbox.

``seed_all(store, n)`` fills an empty store: the reference data (Portuguese
cities, the nine contact lifecycle stages) always, then ``n`` leads, ``n``
unqualified leads (2019), up to 8 contact types (2019), up to 10 audience
lists and ``n`` lead memberships of them (2021). Every lead and unqualified
lead owns an email record, a phone record or both, so ``/email`` and
``/phone`` list about ``2 * n`` records. The same ``n`` always gives the same
data. ``add_records(store, name, count)`` generates more records in bulk (for
``POST /_admin/records/{name}``).
"""

from __future__ import annotations

import json
import random
import unicodedata
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from closum_api import v2
from closum_api.registry import Revision

if TYPE_CHECKING:
    from collections.abc import Callable

    from closum_sandbox.store import Store

CITIES = (
    "Abrantes",
    "Águeda",
    "Albufeira",
    "Almada",
    "Amadora",
    "Aveiro",
    "Barcelos",
    "Beja",
    "Braga",
    "Bragança",
    "Caldas da Rainha",
    "Cascais",
    "Castelo Branco",
    "Chaves",
    "Coimbra",
    "Covilhã",
    "Elvas",
    "Espinho",
    "Estremoz",
    "Évora",
    "Faro",
    "Figueira da Foz",
    "Funchal",
    "Guarda",
    "Guimarães",
    "Lagos",
    "Lamego",
    "Leiria",
    "Lisboa",
    "Loulé",
    "Matosinhos",
    "Mirandela",
    "Odivelas",
    "Oeiras",
    "Olhão",
    "Ovar",
    "Penafiel",
    "Peniche",
    "Pombal",
    "Ponta Delgada",
    "Portalegre",
    "Portimão",
    "Porto",
    "Póvoa de Varzim",
    "Santarém",
    "Setúbal",
    "Silves",
    "Sintra",
    "Tavira",
    "Tomar",
    "Torres Vedras",
    "Viana do Castelo",
    "Vila Nova de Gaia",
    "Vila Real",
    "Viseu",
)

LIFECYCLE_STAGES = v2.LIFECYCLE_STAGES  # as the 2021 reference lists them (ids 1 to 9)

CONTACT_TYPES = (
    "Cliente particular",
    "Empresa",
    "Parceiro",
    "Fornecedor",
    "Revendedor",
    "Imprensa",
    "Estudante",
    "Visitante da feira",
)

AUDIENCE_LISTS = (
    "Newsletter semanal",
    "Clientes Porto",
    "Clientes Lisboa",
    "Campanha de Verão",
    "Black Friday",
    "Webinar de Março",
    "Leads da feira",
    "Reativação",
    "VIP",
    "Promoções SMS",
)

FIRST_NAMES = (
    "João",
    "Maria",
    "José",
    "Ana",
    "António",
    "Francisca",
    "Francisco",
    "Beatriz",
    "Manuel",
    "Leonor",
    "Pedro",
    "Inês",
    "Tiago",
    "Carolina",
    "Rui",
    "Mariana",
    "Miguel",
    "Sofia",
    "Luís",
    "Matilde",
    "Diogo",
    "Catarina",
    "Rodrigo",
    "Joana",
    "Gonçalo",
    "Rita",
    "Duarte",
    "Marta",
    "Afonso",
    "Helena",
    "Nuno",
    "Teresa",
    "Ricardo",
    "Sara",
)

LAST_NAMES = (
    "Silva",
    "Santos",
    "Ferreira",
    "Pereira",
    "Oliveira",
    "Costa",
    "Rodrigues",
    "Martins",
    "Jesus",
    "Sousa",
    "Fernandes",
    "Gonçalves",
    "Gomes",
    "Lopes",
    "Marques",
    "Alves",
    "Almeida",
    "Ribeiro",
    "Pinto",
    "Carvalho",
    "Teixeira",
    "Moreira",
    "Correia",
    "Mendes",
    "Nunes",
    "Soares",
    "Vieira",
    "Monteiro",
    "Cardoso",
    "Rocha",
    "Raposo",
    "Conceição",
)

DOMAINS = ("gmail.com", "sapo.pt", "hotmail.com", "outlook.pt", "iol.pt", "closum.com", "netcabo.pt")

CAMPAIGNS = ("primavera", "verao", "natal", "feira", "website", "facebook", "google")

USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/72.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 6.1; Win64; x64; rv:47.0) Gecko/20100101 Firefox/47.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 12_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
)

_START = int(datetime(2018, 1, 1, 10, 0, tzinfo=timezone.utc).timestamp())
_SPAN = 3 * 365 * 86400

# Shares of the generated data (each compared with one draw of the RNG, so the data stays the same).
_MAIL_FROM = 0.05  # contacts drawing below this have no email...
_PHONE_BELOW = 0.95  # ...and those drawing at or above this no phone
_PORTUGUESE_PHONES = 0.85  # the others are North American numbers
_NO_CUSTOM_DATA = 0.6
_NEWSLETTER = 0.5
_NO_OPT_IN = 0.5
_SMS_OPT_IN = 0.5
_EMAIL_OPT_IN = 0.8


def reproducible_rng(seed: int | str) -> random.Random:
    """A random generator that draws the same sequence for the same ``seed``: test data and faults, not secrets.

    Args:
        seed: what fixes the sequence.

    Returns:
        The generator.
    """
    return random.Random(seed)  # noqa: S311  # reproducibility is the point: nothing drawn is a secret


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower().replace(" ", "")


_FIRST_ASCII = tuple(_ascii(n) for n in FIRST_NAMES)
_LAST_ASCII = tuple(_ascii(n) for n in LAST_NAMES)


def iso(ts: float) -> str:
    """ISO 8601 with the ``+00:00`` offset the service uses."""
    return datetime.fromtimestamp(int(ts), timezone.utc).isoformat()


def _dates(rng: random.Random, count: int, start: int = _START) -> list[str]:
    """Increasing creation dates: records with larger ids are newer."""
    step = max(60, _SPAN // max(count, 1))
    return [iso(start + i * step + rng.randrange(step)) for i in range(count)]


class _People:
    """Names, email addresses, phones and opt-ins from one RNG."""

    def __init__(self, rng: random.Random) -> None:
        """Draw from ``rng``."""
        self.rng = rng

    def person(self, n: int) -> tuple[str, str]:
        """A full name and an email address made unique by ``n``."""
        rng = self.rng
        f = rng.randrange(len(FIRST_NAMES))
        l1 = rng.randrange(len(LAST_NAMES))
        l2 = rng.randrange(len(LAST_NAMES))
        name = f"{FIRST_NAMES[f]} {LAST_NAMES[l1]} {LAST_NAMES[l2]}"
        email = f"{_FIRST_ASCII[f]}.{_LAST_ASCII[l2]}{n}@{DOMAINS[rng.randrange(len(DOMAINS))]}"
        return name, email

    def phone(self) -> tuple[str, str]:
        """An extension and a phone number (mostly Portuguese mobiles)."""
        rng = self.rng
        if rng.random() < _PORTUGUESE_PHONES:
            return "351", f"9{rng.choice('1236')}{rng.randrange(10_000_000):07d}"
        return "001", f"{rng.randrange(200, 999)}-{rng.randrange(200, 999)}-{rng.randrange(10_000):04d}"

    def custom_data(self) -> str | None:
        """A lead's ``custom_data`` (JSON text), or ``None``."""
        rng = self.rng
        if rng.random() < _NO_CUSTOM_DATA:
            return None
        return json.dumps(
            {"origem": rng.choice(CAMPAIGNS), "newsletter": rng.random() < _NEWSLETTER}, ensure_ascii=False
        )

    def opt_in(self, owner_key: str, owner_id: int, date: str) -> str | None:
        """An opt-in record (JSON text) of the contact ``owner_id``, or ``None``."""
        rng = self.rng
        if rng.random() < _NO_OPT_IN:
            return None
        return json.dumps(
            {
                "id": owner_id,
                owner_key: owner_id,
                "sms": rng.random() < _SMS_OPT_IN,
                "email": rng.random() < _EMAIL_OPT_IN,
                "enviroment": {
                    "CONTENT_LENGTH": str(rng.randrange(100, 400)),
                    "HTTP_USER_AGENT": rng.choice(USER_AGENTS),
                    "HTTP_REFERER": "https://www.google.com",
                    "HTTP_ACCEPT_LANGUAGE": "pt-PT,pt;q=0.8,en;q=0.5,en-US;q=0.3",
                    "REMOTE_ADDR": f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                    "REMOTE_PORT": str(rng.randrange(1024, 65535)),
                    "REQUEST_URI": "/",
                    "REQUEST_TIME_FLOAT": f"{_START + rng.randrange(_SPAN)}.{rng.randrange(1000):03d}",
                },
                "creation_date": date,
            },
            ensure_ascii=False,
        )


def _contacts(store: Store, rng: random.Random, table: str, count: int) -> list[int]:
    """Insert ``count`` leads or unqualified leads with their emails and phones."""
    if count <= 0:
        return []
    people = _People(rng)
    first = store.reserve_ids(table, count)
    ids = list(range(first, first + count))
    dates = _dates(rng, count)
    n_mail = n_phone = 0
    flags = []
    for _ in ids:
        r = rng.random()
        has_mail, has_phone = (r >= _MAIL_FROM), (r < _PHONE_BELOW)
        flags.append((has_mail, has_phone))
        n_mail += has_mail
        n_phone += has_phone
    mail_id = store.reserve_ids("email", n_mail)
    phone_id = store.reserve_ids("phone", n_phone)
    emails: list[tuple[object, ...]] = []
    phones: list[tuple[object, ...]] = []
    rows: list[tuple[object, ...]] = []
    city_ids = store.ids("city")
    if table == "lead":
        stage_ids = store.ids("contact_lifecycle_stage")
        owner_key = "lead_id"
    else:
        stage_ids = store.ids("contact_type")
        owner_key = "unqualified_lead_id"
    for rid, date, (has_mail, has_phone) in zip(ids, dates, flags, strict=True):
        name, address = people.person(rid)
        eid = pid = None
        if has_mail:
            eid = mail_id
            mail_id += 1
            emails.append((eid, address, 1, date))
        if has_phone:
            pid = phone_id
            phone_id += 1
            phones.append((pid, *people.phone(), 1, date))
        city = rng.choice(city_ids) if city_ids else None
        other = rng.choice(stage_ids) if stage_ids else None
        opt_in = people.opt_in(owner_key, rid, date)
        if table == "lead":
            rows.append((rid, name, city, other, people.custom_data(), date, eid, pid, opt_in))
        else:
            rows.append((rid, name, other, city, date, eid, pid, opt_in))
    store.insert_rows("email", emails)
    store.insert_rows("phone", phones)
    store.insert_rows(table, rows)
    return ids


def _labels(store: Store, rng: random.Random, table: str, names: tuple[str, ...], count: int) -> list[int]:
    if count <= 0:
        return []
    first = store.reserve_ids(table, count)
    have = store.count(table)
    dates = _dates(rng, count)
    rows = []
    for i in range(count):
        k = have + i
        label = names[k % len(names)] + (f" {k // len(names) + 1}" if k >= len(names) else "")
        rows.append((first + i, label, dates[i]))
    store.insert_rows(table, rows)
    return [r[0] for r in rows]


def _memberships(store: Store, rng: random.Random, count: int) -> list[int]:
    leads, lists = store.ids("lead"), store.ids("audience_list")
    if count <= 0 or not leads or not lists:
        return []
    first = store.reserve_ids("lead_audience_list", count)
    dates = _dates(rng, count)
    rows = [(first + i, rng.choice(leads), rng.choice(lists), dates[i]) for i in range(count)]
    store.insert_rows("lead_audience_list", rows)
    return [r[0] for r in rows]


def _emails(store: Store, rng: random.Random, count: int) -> list[int]:
    people = _People(rng)
    first = store.reserve_ids("email", count)
    dates = _dates(rng, count)
    rows = [(first + i, people.person(first + i)[1], 1, dates[i]) for i in range(count)]
    store.insert_rows("email", rows)
    return [r[0] for r in rows]


def _phones(store: Store, rng: random.Random, count: int) -> list[int]:
    people = _People(rng)
    first = store.reserve_ids("phone", count)
    dates = _dates(rng, count)
    rows = [(first + i, *people.phone(), 1, dates[i]) for i in range(count)]
    store.insert_rows("phone", rows)
    return [r[0] for r in rows]


def _cities(store: Store, count: int) -> list[int]:
    first = store.reserve_ids("city", count)
    have = store.count("city")
    rows = []
    for i in range(count):
        k = have + i
        rows.append((first + i, CITIES[k % len(CITIES)] + (f" {k // len(CITIES) + 1}" if k >= len(CITIES) else "")))
    store.insert_rows("city", rows)
    return [r[0] for r in rows]


#: Generators of each resource's records: ``(store, rng, count) -> ids``.
_GENERATORS: dict[str, Callable[[Store, random.Random, int], list[int]]] = {
    "lead": lambda store, rng, count: _contacts(store, rng, "lead", count),
    "unqualified_lead": lambda store, rng, count: _contacts(store, rng, "unqualified_lead", count),
    "contact_type": lambda store, rng, count: _labels(store, rng, "contact_type", CONTACT_TYPES, count),
    "audience_list": lambda store, rng, count: _labels(store, rng, "audience_list", AUDIENCE_LISTS, count),
    "lead_audience_list": _memberships,
    "email": _emails,
    "phone": _phones,
    "city": lambda store, _rng, count: _cities(store, count),
}


def add_records(store: Store, name: str, count: int) -> list[int]:
    """Generate ``count`` more records of a resource.

    The same store contents, name and count always give the same records.

    Args:
        store: where to add them.
        name: the resource's name (``lead``, ``email``, ...).
        count: how many.

    Returns:
        Their ids; fewer than ``count`` when what they refer to does not exist.

    Raises:
        ValueError: records of this resource cannot be generated.
    """
    generate = _GENERATORS.get(name)
    if generate is None:
        msg = f"records of {name} cannot be generated"
        raise ValueError(msg)
    rng = reproducible_rng(f"{name}:{store.next_id(name)}:{count}")
    return generate(store, rng, count)


def seed_all(store: Store, n: int, revisions: frozenset[Revision]) -> None:
    """Fill an empty store; the same ``n`` always gives the same data.

    Args:
        store: the empty store.
        n: how many leads (and unqualified leads, memberships) to seed; also the RNG seed.
        revisions: the revisions served (resources of the others are not seeded).
    """
    rng = reproducible_rng(n)
    store.insert_rows("city", [(i + 1, c) for i, c in enumerate(CITIES)])
    store.insert_rows("contact_lifecycle_stage", [(i + 1, s) for i, s in enumerate(LIFECYCLE_STAGES)])
    if Revision.R2019 in revisions:
        _labels(store, rng, "contact_type", CONTACT_TYPES, min(n, len(CONTACT_TYPES)))
    _contacts(store, rng, "lead", n)
    if Revision.R2019 in revisions:
        _contacts(store, rng, "unqualified_lead", n)
    if Revision.R2021 in revisions:
        _labels(store, rng, "audience_list", AUDIENCE_LISTS, min(n, len(AUDIENCE_LISTS)))
        _memberships(store, rng, n)
