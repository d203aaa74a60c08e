"""The human feedback store: one SQLite file of replies, ratings and blind comparisons.

    from bengali_empathy.feedback import FeedbackStore, export_preferences, summary
    store = FeedbackStore("outputs/feedback.db")           # created and migrated on first use
    rid = store.add_reply(session="s1", variant="fine_tuned", model=..., consent=True, prompt=..., reply=...)
    store.add_rating(rid, session="s1", consent=True, thumbs=-1, empathy=2, better_reply="...")
    records = export_preferences("outputs/feedback.db")    # TRL pairs and unpaired records (see below)

Durability: WAL journal, synchronous=FULL, one `BEGIN IMMEDIATE` transaction per submission; a call
returns (and the page acknowledges) only after the commit, so killing the server (even kill -9)
never loses an acknowledged row nor corrupts the file. The schema is versioned (`PRAGMA user_version`)
and upgraded in place by MIGRATIONS, each in its own transaction.

Consent: a row stores message, reply, better-reply and comment text only when its `consent` is true;
otherwise those columns are NULL and only numbers and categories are kept (ratings, safety actions,
the automatic score). Text that was not stored can never be exported.

Export (`export_preferences`), one record per line of FILE.jsonl, both kinds TRL trainers read:
  pairs     {"prompt", "chosen", "rejected", ...} from blind comparisons (ties give none) and from a
            rater's better reply (chosen) against the model's reply they rated (rejected);
  unpaired  {"prompt", "completion", "label": bool, ...} from thumbs up/down (the latest per reply and session).
Every record also has "source": "human", "kind" (comparison | better_reply | thumbs), "history" (the
earlier turns as role/content messages, [] for a first turn) and metadata: model, adapter, variant,
config_hash, settings, safety_actions, crisis, created_at (of the judgement), reply_created_at, session,
rater and the row ids; pairs also carry the rejected reply's rejected_variant/_model/_adapter/_config_hash.
No project imports beyond errors/runlog: the bottom layer.
"""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import DataError
from .runlog import write_jsonl_atomic

DIMENSIONS = ("empathy", "helpfulness", "safety", "natural_bengali")
CHOICES = ("A", "B", "tie")
BUSY_TIMEOUT_MS = 30_000

_V1 = """
CREATE TABLE replies (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at     TEXT NOT NULL,
    session        TEXT NOT NULL,
    rater          TEXT,
    mode           TEXT NOT NULL CHECK (mode IN ('chat', 'compare')),
    turn           INTEGER NOT NULL DEFAULT 0,
    variant        TEXT NOT NULL,
    model          TEXT NOT NULL,
    adapter        TEXT,
    config_hash    TEXT,
    settings       TEXT NOT NULL DEFAULT '{}',
    consent        INTEGER NOT NULL CHECK (consent IN (0, 1)),
    prompt         TEXT,
    history        TEXT,
    reply          TEXT,
    model_text     TEXT,
    crisis         TEXT,
    safety_actions TEXT NOT NULL DEFAULT '[]',
    safety_flags   TEXT NOT NULL DEFAULT '[]',
    new_tokens     INTEGER,
    latency_s      REAL,
    stopped        INTEGER,
    auto_score     REAL,
    auto_flags     TEXT NOT NULL DEFAULT '[]',
    CHECK (consent = 1 OR (prompt IS NULL AND history IS NULL AND reply IS NULL AND model_text IS NULL))
);
CREATE TABLE ratings (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at      TEXT NOT NULL,
    reply_id        INTEGER NOT NULL REFERENCES replies(id),
    session         TEXT NOT NULL,
    rater           TEXT,
    source          TEXT NOT NULL CHECK (source IN ('form', 'like')),
    consent         INTEGER NOT NULL CHECK (consent IN (0, 1)),
    thumbs          INTEGER CHECK (thumbs IN (-1, 0, 1)),
    empathy         INTEGER CHECK (empathy BETWEEN 1 AND 5),
    helpfulness     INTEGER CHECK (helpfulness BETWEEN 1 AND 5),
    safety          INTEGER CHECK (safety BETWEEN 1 AND 5),
    natural_bengali INTEGER CHECK (natural_bengali BETWEEN 1 AND 5),
    better_reply    TEXT,
    comment         TEXT,
    CHECK (consent = 1 OR (better_reply IS NULL AND comment IS NULL))
);
CREATE TABLE comparisons (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    session    TEXT NOT NULL,
    rater      TEXT,
    consent    INTEGER NOT NULL CHECK (consent IN (0, 1)),
    reply_a    INTEGER NOT NULL REFERENCES replies(id),
    reply_b    INTEGER NOT NULL REFERENCES replies(id),
    variant_a  TEXT NOT NULL,
    variant_b  TEXT NOT NULL,
    choice     TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie')),
    winner     TEXT
);
"""

_V2 = """
CREATE INDEX ratings_reply ON ratings(reply_id);
CREATE INDEX replies_session ON replies(session, mode);
CREATE INDEX comparisons_variants ON comparisons(variant_a, variant_b);
"""

# (version, SQL): applied in order, each in one transaction that also sets PRAGMA user_version.
# v1: the three tables. v2: indexes for the results queries (rating lookups per reply, per session, per pair).
MIGRATIONS: list[tuple[int, str]] = [(1, _V1), (2, _V2)]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _json(value: Any) -> str:
    return json.dumps(value if value is not None else [], ensure_ascii=False, default=str, sort_keys=True)


def _loads(value: str | None, default: Any = None) -> Any:
    if value is None:
        return default
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return default


def _score(value: Any, name: str) -> int | None:
    if value in (None, "", 0, "0"):
        return None
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a whole number 1-5, got {value!r}") from None
    if not 1 <= v <= 5:
        raise DataError(f"{name} must be 1-5, got {v}")
    return v


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise DataError(f"{path}: SQLite could not switch to WAL mode (got {mode}); put --feedback-db on a "
                            "local disk")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as e:
        conn.close()
        raise DataError(f"{path} is not a feedback database ({e}); pass a .db written by `test_model.py web` "
                        "or a new file name") from None
    except Exception:
        conn.close()
        raise
    return conn


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE (take the write lock up front) ... COMMIT; ROLLBACK on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def migrate(conn: sqlite3.Connection, path: Path | str = "the database", upto: int | None = None) -> int:
    """Bring the schema to `upto` (default: the newest); returns the version now in the file."""
    target = SCHEMA_VERSION if upto is None else upto
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise DataError(f"{path} has feedback schema v{version}, newer than this code's v{SCHEMA_VERSION}: "
                        "update the project (git pull) or pass another --feedback-db")
    for v, sql in MIGRATIONS:
        if version < v <= target:
            with _transaction(conn):
                # Re-read under the write lock: another process may have migrated meanwhile.
                if conn.execute("PRAGMA user_version").fetchone()[0] >= v:
                    continue
                for stmt in (s.strip() for s in sql.split(";")):
                    if stmt:
                        conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {v}")
            version = v
    return version


class FeedbackStore:
    """The store at `path` (created with its folder if missing). Every add_* is one committed transaction
    and returns the new row id; a connection is opened per call, so any thread may call."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise DataError(f"{self.path} is a folder; pass a file name such as outputs/feedback.db")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(_connect(self.path)) as conn:
            try:
                self.version = migrate(conn, self.path)
            except sqlite3.DatabaseError as e:
                raise DataError(f"{self.path} is not a feedback database ({e}); pass a .db written by "
                                "`test_model.py web` or a new file name") from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with closing(_connect(self.path)) as conn, _transaction(conn):
            yield conn

    def connect(self) -> sqlite3.Connection:
        """A read connection (rows as sqlite3.Row); close it when done."""
        return _connect(self.path)

    # ---- submissions
    def add_reply(self, *, session: str, variant: str, model: str, consent: bool, mode: str = "chat",
                  adapter: str | None = None, config_hash: str | None = None, settings: dict | None = None,
                  prompt: str | None = None, history: list[dict] | None = None, reply: str | None = None,
                  model_text: str | None = None, crisis: str | None = None,
                  safety_actions: Iterable[str] = (), safety_flags: Iterable[str] = (),
                  new_tokens: int | None = None, latency_s: float | None = None, stopped: bool | None = None,
                  auto_score: float | None = None, auto_flags: Iterable[str] = (), turn: int = 0,
                  rater: str | None = None) -> int:
        """One reply as shown to a rater. Without consent, prompt/history/reply/model_text are not stored."""
        texts = (prompt, _json(history or []), reply, model_text) if consent else (None, None, None, None)
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO replies (created_at, session, rater, mode, turn, variant, model, adapter, config_hash, "
                "settings, consent, prompt, history, reply, model_text, crisis, safety_actions, safety_flags, "
                "new_tokens, latency_s, stopped, auto_score, auto_flags) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now(), session, rater, mode, int(turn), variant, model, adapter, config_hash,
                 json.dumps(settings or {}, ensure_ascii=False, sort_keys=True, default=str), int(bool(consent)),
                 *texts, crisis, _json(list(safety_actions)), _json(list(safety_flags)), new_tokens, latency_s,
                 None if stopped is None else int(bool(stopped)), auto_score, _json(list(auto_flags))))
            return int(cur.lastrowid)

    def add_rating(self, reply_id: int, *, session: str, consent: bool, thumbs: int | None = None,
                   empathy: int | None = None, helpfulness: int | None = None, safety: int | None = None,
                   natural_bengali: int | None = None, better_reply: str | None = None,
                   comment: str | None = None, source: str = "form", rater: str | None = None) -> int:
        """A rater's judgement of one reply: thumbs (+1/-1, 0 = taken back), 1-5 per dimension, a better reply
        and a comment (both stored only with consent). Raises DataError for an empty or invalid rating."""
        scores = {"empathy": _score(empathy, "empathy"), "helpfulness": _score(helpfulness, "helpfulness"),
                  "safety": _score(safety, "safety"), "natural_bengali": _score(natural_bengali, "natural_bengali")}
        if thumbs not in (None, -1, 0, 1):
            raise DataError(f"thumbs must be 1 (up), -1 (down) or 0 (taken back), got {thumbs!r}")
        better, note = (_text(better_reply), _text(comment)) if consent else (None, None)
        if thumbs is None and not any(scores.values()) and better is None and note is None:
            raise DataError("the rating is empty: give thumbs, a 1-5 score, a better reply or a comment")
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM replies WHERE id = ?", (int(reply_id),)).fetchone() is None:
                raise DataError(f"no reply #{reply_id} in {self.path}: rate a reply the page has shown")
            cur = conn.execute(
                "INSERT INTO ratings (created_at, reply_id, session, rater, source, consent, thumbs, empathy, "
                "helpfulness, safety, natural_bengali, better_reply, comment) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now(), int(reply_id), session, rater, source, int(bool(consent)), thumbs, scores["empathy"],
                 scores["helpfulness"], scores["safety"], scores["natural_bengali"], better, note))
            return int(cur.lastrowid)

    def add_comparison(self, reply_a: int, reply_b: int, choice: str, *, session: str, consent: bool,
                       rater: str | None = None) -> int:
        """A blind vote between two replies to one message: 'A', 'B' or 'tie'. The variants (which model
        gave which reply) are taken from the reply rows, so the page never has to show them."""
        if choice not in CHOICES:
            raise DataError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
        with self._write() as conn:
            rows = {r["id"]: r["variant"] for r in conn.execute(
                "SELECT id, variant FROM replies WHERE id IN (?, ?) AND mode = 'compare'", (int(reply_a), int(reply_b)))}
            if int(reply_a) not in rows or int(reply_b) not in rows or int(reply_a) == int(reply_b):
                raise DataError(f"replies #{reply_a} and #{reply_b} are not two comparison replies in {self.path}")
            va, vb = rows[int(reply_a)], rows[int(reply_b)]
            winner = {"A": va, "B": vb}.get(choice)
            cur = conn.execute(
                "INSERT INTO comparisons (created_at, session, rater, consent, reply_a, reply_b, variant_a, variant_b, "
                "choice, winner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now(), session, rater, int(bool(consent)), int(reply_a), int(reply_b), va, vb, choice, winner))
            return int(cur.lastrowid)

    # ---- reading
    def integrity(self) -> str:
        with closing(self.connect()) as conn:
            return conn.execute("PRAGMA integrity_check").fetchone()[0]


# --------------------------------------------------------------------------- export


def _open_existing(db_path: str | Path) -> FeedbackStore:
    path = Path(db_path)
    if not path.is_file():
        raise DataError(f"no feedback database at {path}: run `python test_model.py web` and rate some replies, "
                        "or pass --feedback PATH")
    return FeedbackStore(path)


def _meta(reply: sqlite3.Row, prefix: str = "") -> dict:
    return {f"{prefix}variant": reply["variant"], f"{prefix}model": reply["model"],
            f"{prefix}adapter": reply["adapter"], f"{prefix}config_hash": reply["config_hash"]}


def _common(reply: sqlite3.Row, created_at: str, session: str, rater: str | None) -> dict:
    return {"history": _loads(reply["history"], []), "source": "human", **_meta(reply),
            "settings": _loads(reply["settings"], {}), "safety_actions": _loads(reply["safety_actions"], []),
            "crisis": reply["crisis"], "created_at": created_at, "reply_created_at": reply["created_at"],
            "session": session, "rater": rater}


def export_preferences(db_path: str | Path) -> list[dict]:
    """All exportable human preference records of the store, oldest judgement first (see the module doc).

    Records whose texts were not stored (no consent) are skipped."""
    store = _open_existing(db_path)
    out: list[tuple[str, int, dict]] = []
    with closing(store.connect()) as conn:
        replies = {r["id"]: r for r in conn.execute("SELECT * FROM replies")}

        def usable(r) -> bool:
            return r is not None and bool(r["consent"]) and bool(r["prompt"]) and bool(r["reply"])

        for c in conn.execute("SELECT * FROM comparisons WHERE choice != 'tie' ORDER BY id"):
            a, b = replies.get(c["reply_a"]), replies.get(c["reply_b"])
            if not (usable(a) and usable(b)):
                continue
            win, lose = (a, b) if c["choice"] == "A" else (b, a)
            rec = {"prompt": win["prompt"], "chosen": win["reply"], "rejected": lose["reply"], "kind": "comparison",
                   **_common(win, c["created_at"], c["session"], c["rater"]), **_meta(lose, "rejected_"),
                   "comparison_id": c["id"], "chosen_reply_id": win["id"], "rejected_reply_id": lose["id"]}
            out.append((c["created_at"], 0, rec))

        for r in conn.execute("SELECT * FROM ratings WHERE better_reply IS NOT NULL AND consent = 1 ORDER BY id"):
            rep = replies.get(r["reply_id"])
            if not usable(rep) or r["better_reply"].strip() == (rep["reply"] or "").strip():
                continue
            rec = {"prompt": rep["prompt"], "chosen": r["better_reply"], "rejected": rep["reply"], "kind": "better_reply",
                   **_common(rep, r["created_at"], r["session"], r["rater"]), **_meta(rep, "rejected_"),
                   "rating_id": r["id"], "reply_id": rep["id"]}
            rec["chosen_by"] = "rater"  # model/adapter/variant: the rated reply's (the model the rater corrected)
            out.append((r["created_at"], 1, rec))

        # Thumbs: the latest thumbs of each session on each reply (a later click replaces an earlier one).
        for r in conn.execute(
                "SELECT * FROM ratings AS t WHERE thumbs IS NOT NULL AND id = (SELECT MAX(id) FROM ratings AS u "
                "WHERE u.reply_id = t.reply_id AND u.session = t.session AND u.thumbs IS NOT NULL) ORDER BY id"):
            rep = replies.get(r["reply_id"])
            if r["thumbs"] == 0 or not usable(rep):
                continue
            rec = {"prompt": rep["prompt"], "completion": rep["reply"], "label": r["thumbs"] > 0, "kind": "thumbs",
                   **_common(rep, r["created_at"], r["session"], r["rater"]), "rating_id": r["id"],
                   "reply_id": rep["id"]}
            out.append((r["created_at"], 2, rec))
    out.sort(key=lambda x: (x[0], x[1]))
    return [rec for _, _, rec in out]


def write_preferences(db_path: str | Path, out_path: str | Path) -> dict:
    """export_preferences into one JSONL file (written atomically); returns the counts per kind."""
    records = export_preferences(db_path)
    write_jsonl_atomic(Path(out_path), records)
    counts = {"pairs": sum("chosen" in r for r in records), "unpaired": sum("label" in r for r in records)}
    for r in records:
        counts[r["kind"]] = counts.get(r["kind"], 0) + 1
    return counts


# --------------------------------------------------------------------------- results


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval for a proportion (95% by default); None when n = 0."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):  # ties share the mean of their ranks
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (Pearson on tie-averaged ranks); None if fewer than 3 pairs or a constant side."""
    if len(xs) != len(ys) or len(xs) < 3:
        return None
    rx, ry = _ranks(list(xs)), _ranks(list(ys))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def _spearman_ci(rho: float, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """Approximate 95% interval by Fisher's z with the Fieller-Hartley-Pearson standard error 1.03/sqrt(n-3)."""
    if n < 5 or abs(rho) >= 1:
        return None
    f = math.atanh(rho)
    se = 1.03 / math.sqrt(n - 3)
    return math.tanh(f - z * se), math.tanh(f + z * se)


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def summary(db_path: str | Path) -> dict:
    """What people said: counts, mean ratings per model and dimension, blind win rates with Wilson 95% intervals,
    and Spearman agreement between human ratings and the automatic empathy score of the same replies."""
    store = _open_existing(db_path) if not isinstance(db_path, FeedbackStore) else db_path
    with closing(store.connect()) as conn:
        q = lambda sql, *a: conn.execute(sql, a).fetchall()  # noqa: E731
        counts = {
            "sessions": q("SELECT COUNT(DISTINCT session) FROM replies")[0][0],
            "replies": q("SELECT COUNT(*) FROM replies WHERE mode = 'chat'")[0][0],
            "comparison_replies": q("SELECT COUNT(*) FROM replies WHERE mode = 'compare'")[0][0],
            "replies_with_text": q("SELECT COUNT(*) FROM replies WHERE consent = 1")[0][0],
            "crisis_replies": q("SELECT COUNT(*) FROM replies WHERE crisis IS NOT NULL")[0][0],
            "ratings": q("SELECT COUNT(*) FROM ratings")[0][0],
            "thumbs_up": 0, "thumbs_down": 0,
            "better_replies": q("SELECT COUNT(*) FROM ratings WHERE better_reply IS NOT NULL")[0][0],
            "comments": q("SELECT COUNT(*) FROM ratings WHERE comment IS NOT NULL")[0][0],
            "comparisons": q("SELECT COUNT(*) FROM comparisons")[0][0],
            "ties": q("SELECT COUNT(*) FROM comparisons WHERE choice = 'tie'")[0][0],
        }
        latest_thumbs = q("SELECT t.thumbs, r.variant, r.auto_score FROM ratings AS t JOIN replies AS r ON r.id = t.reply_id "
                          "WHERE t.thumbs IS NOT NULL AND t.id = (SELECT MAX(id) FROM ratings AS u WHERE "
                          "u.reply_id = t.reply_id AND u.session = t.session AND u.thumbs IS NOT NULL)")
        counts["thumbs_up"] = sum(1 for t in latest_thumbs if t["thumbs"] == 1)
        counts["thumbs_down"] = sum(1 for t in latest_thumbs if t["thumbs"] == -1)

        rated = q("SELECT t.*, r.variant, r.auto_score FROM ratings AS t JOIN replies AS r ON r.id = t.reply_id")
        models: dict[str, dict] = {}
        for v in sorted({r["variant"] for r in q("SELECT DISTINCT variant FROM replies")}):
            rows = [r for r in rated if r["variant"] == v]
            dims = {}
            for d in DIMENSIONS:
                vals = [r[d] for r in rows if r[d] is not None]
                dims[d] = {"mean": _r(sum(vals) / len(vals), 2) if vals else None, "n": len(vals)}
            ups = sum(1 for t in latest_thumbs if t["variant"] == v and t["thumbs"] == 1)
            downs = sum(1 for t in latest_thumbs if t["variant"] == v and t["thumbs"] == -1)
            models[v] = {"replies": q("SELECT COUNT(*) FROM replies WHERE variant = ?", v)[0][0], "ratings": len(rows),
                         "dimensions": dims, "thumbs_up": ups, "thumbs_down": downs,
                         "thumbs_up_rate": _r(ups / (ups + downs)) if ups + downs else None}

        pairs: dict[tuple[str, str], dict] = {}
        for c in q("SELECT variant_a, variant_b, choice, winner FROM comparisons"):
            a, b = sorted((c["variant_a"], c["variant_b"]))
            p = pairs.setdefault((a, b), {"first": a, "second": b, "wins": 0, "losses": 0, "ties": 0})
            if c["choice"] == "tie":
                p["ties"] += 1
            elif c["winner"] == a:
                p["wins"] += 1
            else:
                p["losses"] += 1
        win_rates = []
        for p in pairs.values():
            decided = p["wins"] + p["losses"]
            ci = wilson(p["wins"], decided)
            win_rates.append({**p, "n": decided + p["ties"], "win_rate": _r(p["wins"] / decided) if decided else None,
                              "ci95": [_r(ci[0]), _r(ci[1])] if ci else None})

        agreement = {}
        auto = [(r, r["auto_score"]) for r in rated if r["auto_score"] is not None]
        for d in (*DIMENSIONS, "mean_of_dimensions"):
            if d == "mean_of_dimensions":
                xs = [(sum(r[k] for k in DIMENSIONS if r[k] is not None) /
                       sum(1 for k in DIMENSIONS if r[k] is not None), s) for r, s in auto
                      if any(r[k] is not None for k in DIMENSIONS)]
            else:
                xs = [(r[d], s) for r, s in auto if r[d] is not None]
            rho = spearman([x for x, _ in xs], [s for _, s in xs])
            ci = _spearman_ci(rho, len(xs)) if rho is not None else None
            agreement[d] = {"spearman": _r(rho), "n": len(xs), "ci95": [_r(ci[0]), _r(ci[1])] if ci else None}
        # Thumbs (+1/-1) against the automatic score too: a rank correlation on a two-valued variable.
        th = [(t["thumbs"], t["auto_score"]) for t in latest_thumbs
              if t["thumbs"] in (-1, 1) and t["auto_score"] is not None]
        rho = spearman([x for x, _ in th], [s for _, s in th])
        agreement["thumbs"] = {"spearman": _r(rho), "n": len(th), "ci95": None}
    return {"db": str(store.path), "schema_version": store.version, "counts": counts, "models": models,
            "win_rates": win_rates, "agreement": agreement,
            "notes": "win_rate = wins / (wins + losses) of `first` against `second`, ties excluded, Wilson 95% "
                     "interval; agreement = Spearman rank correlation between a human rating and the automatic "
                     "empathy_score (bengali_empathy.score) of the same reply, ~95% interval by Fisher z."}
