"""SQLite storage of the sandbox: one table per resource, sorting, paging.

One connection (``check_same_thread=False``) guarded by a lock serves every
request; queries are short. Leads and unqualified leads keep their email and
phone as references to rows of the ``email`` and ``phone`` tables (so an
update of ``/email/ID`` shows in the lead) and their opt-in as JSON text.
Paging sorted by a column of the resource's own table pages a subquery on
that table first, so sorting by ``id`` walks the primary key and stays fast
with hundreds of thousands of rows.

This module also shapes rows into records exactly as the service serves
them: list items without nested ids and opt-ins, retrieves with them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

from closum_api.registry import Revision

if TYPE_CHECKING:
    from collections.abc import Iterable

SCHEMA_VERSION = "1"

#: First id of resources that only the 2021 revision serves: its examples use large ids.
ID_BASE = {"audience_list": 289701, "lead_audience_list": 913401}

TABLES: dict[str, tuple[str, ...]] = {
    "city": ("id", "city_name"),
    "contact_lifecycle_stage": ("id", "label"),
    "contact_type": ("id", "label", "creation_date"),
    "email": ("id", "email", "status", "register_date"),
    "phone": ("id", "extension", "number", "is_valid", "date_add"),
    "lead": (
        "id",
        "name",
        "city_id",
        "contact_lifecycle_stage_id",
        "custom_data",
        "creation_date",
        "email_id",
        "phone_id",
        "opt_in",
    ),
    "unqualified_lead": (
        "id",
        "name",
        "contact_type_id",
        "city_id",
        "creation_date",
        "email_id",
        "phone_id",
        "opt_in",
    ),
    "audience_list": ("id", "name", "creation_date"),
    "lead_audience_list": ("id", "lead_id", "audience_list_id", "creation_date"),
    # What the V2 API keeps of a lead beyond the V1 fields (id = the lead's id): tags and custom_fields as JSON.
    "lead_v2": ("id", "tags", "custom_fields", "birth_date"),
}

_CONTACTS = ("lead", "unqualified_lead")

#: Record field -> SQL expression to sort on, where it is not the column of the same name.
_SORT_EXPR: dict[str, dict[str, str]] = {
    "lead": {"email": "e.email", "phone": "p.number", "lead_opt_in": "t.opt_in"},
    "unqualified_lead": {"email": "e.email", "phone": "p.number", "unqualified_lead_opt_in": "t.opt_in"},
    "contact_type": {"date_add": "t.creation_date"},
}

_JOIN = " LEFT JOIN email e ON e.id = t.email_id LEFT JOIN phone p ON p.id = t.phone_id"
_JOIN_COLS = ", e.email AS e_email, p.extension AS p_extension, p.number AS p_number"


def _sql(template: str, table: str, **parts: str) -> str:
    """The one place identifiers enter SQL: ``template`` with ``{table}`` (checked) and ``parts`` filled in.

    Values are never formatted in: they are bound (``?``). The other parts are
    built from :data:`TABLES`' column names and fixed SQL by the callers.

    Args:
        template: SQL with ``{table}`` and the names of ``parts`` as placeholders.
        table: a table of :data:`TABLES`.
        **parts: the other placeholders' SQL.

    Returns:
        The statement.

    Raises:
        ValueError: ``table`` is not one of the sandbox's tables.
    """
    if table not in TABLES:
        msg = f"no table {table!r} in the sandbox"
        raise ValueError(msg)
    return template.format(table=table, **parts)


class Store:
    """All records of one sandbox, in SQLite.

    Attributes:
        revisions: the API revisions served (they decide the fields of a lead).
        lock: held around every use of the connection; hold it to make several calls one step.
        conn: the SQLite connection.
    """

    def __init__(self, path: str | None, revisions: frozenset[Revision]) -> None:
        """Open (or create) the database and its tables.

        Args:
            path: the SQLite file; ``None`` keeps the data in memory.
            revisions: the API revisions served.
        """
        self.revisions = revisions
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(path or ":memory:", check_same_thread=False, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        if path:
            self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=OFF" if not path else "PRAGMA synchronous=NORMAL")
        self._next: dict[str, int] = {}
        self._count: dict[str, int] = {}
        self._create_tables()

    # ---- tables -------------------------------------------------------
    def _create_tables(self) -> None:
        with self.lock:
            c = self.conn
            c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            for table, cols in TABLES.items():
                defs = ", ".join("id INTEGER PRIMARY KEY" if col == "id" else col for col in cols)
                c.execute(f"CREATE TABLE IF NOT EXISTS {table} ({defs})")
                # A narrow index on the key lets OFFSET skip rows without reading them.
                c.execute(f"CREATE INDEX IF NOT EXISTS {table}_id ON {table}(id)")
            c.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            self._refresh_counters()

    def _refresh_counters(self) -> None:
        for table in TABLES:
            top, n = self.conn.execute(_sql("SELECT max(id), count(*) FROM {table}", table)).fetchone()
            self._next[table] = max((top or 0) + 1, ID_BASE.get(table, 1))
            self._count[table] = n

    def is_seeded(self) -> bool:
        """Whether the database holds seeded data (a new one does not)."""
        with self.lock:
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'seeded'").fetchone()
            return row is not None

    def mark_seeded(self, seed: int) -> None:
        """Note that the database is seeded, with ``seed``."""
        with self.lock:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('seeded', ?)", (str(seed),))

    def wipe(self) -> None:
        """Delete every record."""
        with self.lock:
            self.conn.execute("BEGIN")
            for table in TABLES:
                self.conn.execute(_sql("DELETE FROM {table}", table))
            self.conn.execute("DELETE FROM meta WHERE key = 'seeded'")
            self.conn.execute("COMMIT")
            self._refresh_counters()

    def close(self) -> None:
        """Close the connection."""
        with self.lock:
            self.conn.close()

    # ---- bulk ---------------------------------------------------------
    def reserve_ids(self, table: str, n: int) -> int:
        """Take ``n`` consecutive ids of ``table``; answer the first."""
        with self.lock:
            first = self._next[table]
            self._next[table] = first + n
            return first

    def next_id(self, table: str) -> int:
        """The id the next record of ``table`` gets."""
        return self._next[table]

    def insert_rows(self, table: str, rows: Iterable[tuple[Any, ...]]) -> None:
        """Insert whole rows (values in :data:`TABLES` column order) in one transaction."""
        rows = list(rows)
        if not rows:
            return
        marks = ", ".join("?" * len(TABLES[table]))
        with self.lock:
            self.conn.execute("BEGIN")
            try:
                self.conn.executemany(_sql("INSERT INTO {table} VALUES ({marks})", table, marks=marks), rows)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
            top = max(r[0] for r in rows)
            self._next[table] = max(self._next[table], top + 1)
            self._count[table] += len(rows)

    def ids(self, table: str) -> list[int]:
        """Every id of ``table``, in order."""
        with self.lock:
            return [r[0] for r in self.conn.execute(_sql("SELECT id FROM {table} ORDER BY id", table))]

    def count(self, table: str) -> int:
        """How many rows ``table`` has."""
        return self._count[table]

    def exists(self, table: str, record_id: int) -> bool:
        """Whether ``table`` has a row with id ``record_id``."""
        sql = _sql("SELECT 1 FROM {table} WHERE id = ?", table)
        with self.lock:
            return self.conn.execute(sql, (record_id,)).fetchone() is not None

    # ---- fields -------------------------------------------------------
    def served_fields(self, name: str, schema_fields: Iterable[str]) -> list[str]:
        """The record-schema fields this revision serves (what ``sort`` accepts)."""
        drop: set[str] = set()
        if name == "lead":
            if Revision.R2019 not in self.revisions:
                drop.add("city_id")
            if Revision.R2021 not in self.revisions:
                drop.add("contact_lifecycle_stage_id")
        return [f for f in schema_fields if f not in drop]

    def _sort_sql(self, name: str, field: str) -> str:
        return _SORT_EXPR.get(name, {}).get(field, f"t.{field}")

    # ---- reads --------------------------------------------------------
    def page(self, name: str, sort: str, limit: int, page: int, *, desc: bool) -> tuple[list[dict[str, Any]], int]:
        """One page of list items, and the total count.

        Args:
            name: the resource.
            sort: the record field to sort by (one of :meth:`served_fields`).
            limit: the page size.
            page: the page number, from 1.
            desc: sort in descending order.

        Returns:
            The page's records as list calls serve them, and the number of records.
        """
        direction = "DESC" if desc else "ASC"
        expr = self._sort_sql(name, sort)
        offset = (page - 1) * limit
        order = f"{expr} {direction}" + ("" if sort == "id" else ", t.id ASC")
        joined = name in _CONTACTS
        with self.lock:
            count = self._count[name]
            if offset >= count:
                return [], count
            if expr.startswith("t."):
                col = expr[2:]
                inner_order = f"{col} {direction}" + ("" if sort == "id" else ", id ASC")
                sql = _sql(
                    "SELECT t.*{cols} FROM (SELECT * FROM {table} ORDER BY {inner} LIMIT ? OFFSET ?) t{join} "
                    "ORDER BY {order}",
                    name,
                    cols=_JOIN_COLS if joined else "",
                    inner=inner_order,
                    join=_JOIN if joined else "",
                    order=order,
                )
            else:
                sql = _sql(
                    "SELECT t.*{cols} FROM {table} t{join} ORDER BY {order} LIMIT ? OFFSET ?",
                    name,
                    cols=_JOIN_COLS,
                    join=_JOIN,
                    order=order,
                )
            rows = self.conn.execute(sql, (limit, offset)).fetchall()
        return [self.render(name, r, retrieve=False) for r in rows], count

    def get(self, name: str, record_id: int, *, opt_in: bool = True) -> dict[str, Any] | None:
        """One record as retrieve serves it (without its opt-in unless ``opt_in``), or ``None``."""
        joined = name in _CONTACTS
        sql = _sql(
            "SELECT t.*{cols} FROM {table} t{join} WHERE t.id = ?",
            name,
            cols=_JOIN_COLS if joined else "",
            join=_JOIN if joined else "",
        )
        with self.lock:
            row = self.conn.execute(sql, (record_id,)).fetchone()
        if row is None:
            return None
        record = self.render(name, row, retrieve=True)
        if not opt_in:
            record.pop(f"{name}_opt_in", None)
        return record

    def all(self, name: str, *, retrieve: bool = True) -> list[dict[str, Any]]:
        """Every record of a resource, in id order, shaped as retrieve (or list) serves them."""
        joined = name in _CONTACTS
        sql = _sql(
            "SELECT t.*{cols} FROM {table} t{join} ORDER BY t.id",
            name,
            cols=_JOIN_COLS if joined else "",
            join=_JOIN if joined else "",
        )
        with self.lock:
            rows = self.conn.execute(sql).fetchall()
        return [self.render(name, r, retrieve=retrieve) for r in rows]

    # ---- V2 ---------------------------------------------------------------
    def lead_with_email(self, email: str) -> int | None:
        """The oldest lead whose email is ``email`` (case-insensitive), if any."""
        sql = "SELECT t.id FROM lead t JOIN email e ON e.id = t.email_id WHERE lower(e.email) = lower(?) ORDER BY t.id"
        with self.lock:
            row = self.conn.execute(sql + " LIMIT 1", (email.strip(),)).fetchone()
        return None if row is None else int(row[0])

    def lead_with_phone(self, country_code: str, national: str) -> int | None:
        """The oldest lead whose phone is this number (extension ``00351`` or ``351``, the number's digits), if any."""
        sql = (
            "SELECT t.id FROM lead t JOIN phone p ON p.id = t.phone_id "
            "WHERE ltrim(coalesce(p.extension, ''), '0') = ? "
            "AND replace(replace(replace(replace(p.number, '-', ''), ' ', ''), '.', ''), '+', '') = ? "
            "ORDER BY t.id LIMIT 1"
        )
        with self.lock:
            row = self.conn.execute(sql, (country_code, national)).fetchone()
        return None if row is None else int(row[0])

    def v2_page(self, limit: int, page: int) -> tuple[list[dict[str, Any]], int]:
        """One page of leads as the sandbox's V2 list serves them (oldest first), and the number of leads."""
        sql = _sql(
            "SELECT t.id, t.name, t.contact_lifecycle_stage_id, t.custom_data, t.creation_date, t.opt_in, "
            "e.email AS e_email, p.extension AS p_extension, p.number AS p_number, "
            "v.tags AS v_tags, v.custom_fields AS v_custom_fields, v.birth_date AS v_birth_date "
            "FROM {table} t{join} LEFT JOIN lead_v2 v ON v.id = t.id ORDER BY t.id LIMIT ? OFFSET ?",
            "lead",
            join=_JOIN,
        )
        with self.lock:
            count = self._count["lead"]
            rows = self.conn.execute(sql, (limit, (page - 1) * limit)).fetchall()
        return [_v2_record(r) for r in rows], count

    # ---- shaping ------------------------------------------------------
    def render(self, name: str, r: sqlite3.Row, *, retrieve: bool) -> dict[str, Any]:
        """A row as the service serves the record: by retrieve, or as a list item."""
        if name in _CONTACTS:
            return self._render_contact(name, r, retrieve=retrieve)
        if name == "contact_type":
            key = "date_add" if retrieve else "creation_date"
            return {"id": r["id"], "label": r["label"], key: r["creation_date"]}
        return dict(r)

    def _render_contact(self, name: str, r: sqlite3.Row, *, retrieve: bool) -> dict[str, Any]:
        d: dict[str, Any] = {"id": r["id"], "name": r["name"]}
        if name == "lead":
            if Revision.R2019 in self.revisions:
                d["city_id"] = r["city_id"]
            if Revision.R2021 in self.revisions:
                d["contact_lifecycle_stage_id"] = r["contact_lifecycle_stage_id"]
            d["custom_data"] = r["custom_data"]
        else:
            d["contact_type_id"] = r["contact_type_id"]
            d["city_id"] = r["city_id"]
        d["creation_date"] = r["creation_date"]
        if r["phone_id"] is None:
            d["phone"] = None
        elif retrieve:
            d["phone"] = {"id": r["phone_id"], "extension": r["p_extension"], "number": r["p_number"]}
        else:
            d["phone"] = {"extension": r["p_extension"], "number": r["p_number"]}
        if r["email_id"] is None:
            d["email"] = None
        elif retrieve:
            d["email"] = {"id": r["email_id"], "email": r["e_email"]}
        else:
            d["email"] = {"email": r["e_email"]}
        if retrieve and r["opt_in"]:
            d[f"{name}_opt_in"] = json.loads(r["opt_in"])
        return d

    # ---- writes -------------------------------------------------------
    def insert(self, table: str, values: dict[str, Any]) -> int:
        """Insert one row (missing columns are NULL); answer its id."""
        with self.lock:
            rid = int(values.get("id") or self.reserve_ids(table, 1))
            row = tuple(rid if c == "id" else values.get(c) for c in TABLES[table])
            self.insert_rows(table, [row])
            return rid

    def update(self, table: str, record_id: int, values: dict[str, Any]) -> bool:
        """Change the given columns of one row (others are ignored); answers whether it exists."""
        cols = [c for c in values if c in TABLES[table] and c != "id"]
        if not cols:
            return self.exists(table, record_id)
        sets = ", ".join(f"{c} = ?" for c in cols)
        with self.lock:
            sql = _sql("UPDATE {table} SET {sets} WHERE id = ?", table, sets=sets)
            cur = self.conn.execute(sql, (*(values[c] for c in cols), record_id))
            return cur.rowcount > 0

    def delete(self, table: str, record_id: int) -> bool:
        """Delete one row, as a person does in Closum's UI; answers whether it existed.

        A contact's email and phone rows stay (other records may share them); its opt-in goes with it.
        """
        with self.lock:
            cur = self.conn.execute(_sql("DELETE FROM {table} WHERE id = ?", table), (record_id,))
            if cur.rowcount > 0:
                self._count[table] -= 1
            return cur.rowcount > 0

    def edit(self, name: str, record_id: int, fields: dict[str, Any]) -> bool:
        """Change fields of one record as Closum's UI does; answers whether it exists.

        ``fields`` are record fields (checked by the caller): plain columns, and
        for a contact its nested ``email`` ``{email}`` / ``phone`` ``{extension,
        number}`` (edited in place, created when missing, ``None`` unlinks) and
        its opt-in ``<name>_opt_in`` (merged into the stored one, ``None``
        removes it).

        Args:
            name: the resource.
            record_id: the record's id.
            fields: the fields to change.

        Returns:
            Whether the record exists.
        """
        with self.lock:
            row = self.conn.execute(_sql("SELECT * FROM {table} WHERE id = ?", name), (record_id,)).fetchone()
            if row is None:
                return False
            values = {k: v for k, v in fields.items() if k in TABLES[name] and k != "id"}
            if name == "contact_type" and "date_add" in fields:
                values["creation_date"] = fields["date_add"]
            if name in _CONTACTS:
                values |= self._edit_nested(name, row, fields)
            if values:
                self.update(name, record_id, values)
            return True

    def _edit_nested(self, name: str, row: sqlite3.Row, fields: dict[str, Any]) -> dict[str, Any]:
        """The contact's columns that change with its nested email, phone and opt-in."""
        values: dict[str, Any] = {}
        for key, table, cols in (("email", "email", ("email",)), ("phone", "phone", ("extension", "number"))):
            if key not in fields:
                continue
            nested = fields[key]
            if nested is None:
                values[f"{key}_id"] = None
            elif row[f"{key}_id"] is not None and self.exists(table, row[f"{key}_id"]):
                self.update(table, row[f"{key}_id"], {c: nested[c] for c in cols if c in nested})
            else:
                created = {c: nested.get(c) for c in cols}
                created |= {"status": 1, "register_date": row["creation_date"]} if key == "email" else {}
                created |= {"is_valid": 1, "date_add": row["creation_date"]} if key == "phone" else {}
                values[f"{key}_id"] = self.insert(table, created)
        opt_key = f"{name}_opt_in"
        if opt_key in fields:
            change = fields[opt_key]
            if change is None:
                values["opt_in"] = None
            else:
                stored = json.loads(row["opt_in"]) if row["opt_in"] else None
                base = stored or {"id": row["id"], f"{name}_id": row["id"], "creation_date": row["creation_date"]}
                values["opt_in"] = json.dumps(base | change, ensure_ascii=False)
        return values


def _v2_record(r: sqlite3.Row) -> dict[str, Any]:
    """A lead as the sandbox's V2 list serves it: the lead/add fields, flat."""
    opt_in = json.loads(r["opt_in"]) if r["opt_in"] else {}
    mobile = None
    if r["p_number"] is not None:
        digits = "".join(ch for ch in f"{r['p_extension'] or ''}{r['p_number']}" if ch.isdigit())
        mobile = "+" + digits.lstrip("0")
    return {
        "id": r["id"],
        "name": r["name"],
        "email": r["e_email"],
        "mobile_number": mobile,
        "consent_email": opt_in.get("email"),
        "consent_sms": opt_in.get("sms"),
        "contact_lifecycle_stage_id": r["contact_lifecycle_stage_id"],
        "custom_data": r["custom_data"],
        "custom_fields": json.loads(r["v_custom_fields"]) if r["v_custom_fields"] else None,
        "tags": json.loads(r["v_tags"]) if r["v_tags"] else [],
        "birth_date": r["v_birth_date"],
        "creation_date": r["creation_date"],
    }
