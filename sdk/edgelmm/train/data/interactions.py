"""User-item interaction data for the Item-Language Model: a MovieLens-format loader and a built-in simulator.

Both give an :class:`Interactions`: a catalog (id, title, genres, description) and each user's items in time order.
Torch-free (numpy only), so evaluation and the runtime tests can build the same data.

MovieLens format (ML-1M's ``.dat`` files; "::"-separated, one record a line)::

    ratings.dat   UserID::MovieID::Rating::Timestamp
    movies.dat    MovieID::Title::Genre1|Genre2|...

The loader is strict: a bad row stops it with one line naming the file, line and problem.

The simulator (``simulate``) exists because no real log can be downloaded here. It is a SIMULATION, not data about
people: every item gets visible genres (its title and description are built from them) and a hidden latent vector
that no text reveals; every user gets a hidden taste vector and a mild genre preference. A user's next item is drawn
with probability proportional to ``exp(HIDDEN_WEIGHT * taste . latent + GENRE_WEIGHT * genre affinity + popularity)``
over items not yet seen, so the hidden factors dominate who watches what. Text alone can reach the genre and
popularity signal; only the interactions (through collaborative filtering) reveal the hidden one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from edgelmm.errors import BadInputError, SpecError


class InteractionDataError(BadInputError):
    """A ratings or items file that does not follow the MovieLens format."""


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    index: int
    """Row of the CF table (0..n_items-1)."""
    source_id: str
    """The id in the source file (MovieLens MovieID), or the simulator's index as text."""
    title: str
    genres: tuple[str, ...]
    description: str


@dataclasses.dataclass(frozen=True, slots=True)
class Interactions:
    """A catalog and who engaged with what, in time order."""

    name: str
    items: tuple[Item, ...]
    histories: tuple[tuple[int, ...], ...]
    """histories[u]: item indices user u engaged with, oldest first (no repeats)."""

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.histories)

    def popularity(self, users: np.ndarray | None = None) -> np.ndarray:
        """int64 [n_items]: how many of ``users`` (default all) engaged with each item."""
        counts = np.zeros(self.n_items, dtype=np.int64)
        for u in range(self.n_users) if users is None else users:
            counts[list(self.histories[u])] += 1
        return counts

    def split_users(self, held_out: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(train users, held-out users), a seeded permutation; held-out users never train the CF table or the LM."""
        order = np.random.default_rng(seed).permutation(self.n_users)
        n_test = max(1, round(held_out * self.n_users))
        return np.sort(order[n_test:]), np.sort(order[:n_test])


# ----------------------------------------------------------------------------------------------------------------
# MovieLens-format loader


def load_movielens(ratings: str | Path, items: str | Path, *, min_rating: float = 0.0,
                   name: str = "movielens") -> Interactions:
    """Read ML-1M-style ``ratings.dat`` and ``movies.dat``; keep ratings >= ``min_rating`` as engagements.

    Items keep the order of the items file; users are numbered in order of first appearance. Raises
    InteractionDataError (one line: file, line number, problem) on any malformed row, an unknown item id, a
    duplicate item id, or a file with no rows.
    """
    catalog = _read_items(Path(items))
    index = {item.source_id: item.index for item in catalog}
    events: dict[str, list[tuple[int, int]]] = {}
    for line_no, fields in _rows(Path(ratings), 4):
        user, item_id, rating, stamp = fields
        if item_id not in index:
            raise InteractionDataError(f"{ratings}:{line_no}: item id '{item_id:.40}' is not in {items}")
        value, when = _number(rating, float, ratings, line_no, "rating"), _number(stamp, int, ratings, line_no,
                                                                                   "timestamp")
        if not 0 <= value <= 10:
            raise InteractionDataError(f"{ratings}:{line_no}: rating {value} is outside [0, 10]")
        if value >= min_rating:
            events.setdefault(user, []).append((when, index[item_id]))
    if not events:
        raise InteractionDataError(f"{ratings}: no ratings >= {min_rating}")
    histories = []
    for user_events in events.values():
        seen: dict[int, None] = {}
        for _, item in sorted(user_events):
            seen.setdefault(item, None)  # a re-rating keeps the first engagement
        histories.append(tuple(seen))
    return Interactions(name=name, items=tuple(catalog), histories=tuple(histories))


def _read_items(path: Path) -> list[Item]:
    catalog: list[Item] = []
    seen: set[str] = set()
    for line_no, (item_id, title, genres) in _rows(path, 3):
        if item_id in seen:
            raise InteractionDataError(f"{path}:{line_no}: duplicate item id '{item_id:.40}'")
        if not title.strip():
            raise InteractionDataError(f"{path}:{line_no}: empty title")
        seen.add(item_id)
        names = tuple(g for g in genres.split("|") if g and g != "(no genres listed)")
        text = f"{title.strip()}. Genres: {', '.join(names) or 'unknown'}."
        catalog.append(Item(index=len(catalog), source_id=item_id, title=title.strip(), genres=names, description=text))
    return catalog


def _rows(path: Path, n_fields: int) -> list[tuple[int, list[str]]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InteractionDataError(f"cannot read '{path}': {exc.strerror}") from None
    # ML-1M's movies.dat is ISO-8859-1; UTF-8 files decode the same way for ASCII and fail loudly otherwise
    text = raw.decode("utf-8") if _is_utf8(raw) else raw.decode("latin-1")
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("::")
        if len(fields) != n_fields or any(not f.strip() for f in fields):
            raise InteractionDataError(f"{path}:{line_no}: expected {n_fields} non-empty '::'-separated fields, "
                                       f"got {len(fields)}: {line[:60]!r}")
        rows.append((line_no, [f.strip() for f in fields]))
    if not rows:
        raise InteractionDataError(f"{path}: no rows")
    return rows


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _number(text: str, kind: type, path: Path | str, line_no: int, what: str) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise InteractionDataError(f"{path}:{line_no}: {what} '{text:.20}' is not a number") from None
    if kind is float and not np.isfinite(value):
        raise InteractionDataError(f"{path}:{line_no}: {what} '{text:.20}' is not finite")
    return value


# ----------------------------------------------------------------------------------------------------------------
# The simulator


GENRES = ("action", "comedy", "drama", "horror", "romance", "science fiction", "thriller", "animation",
          "documentary", "western", "mystery", "fantasy")
_ADJECTIVES = ("Silent", "Crimson", "Broken", "Golden", "Hidden", "Last", "Midnight", "Frozen", "Wild", "Distant",
               "Burning", "Quiet", "Iron", "Paper", "Velvet", "Hollow", "Electric", "Lonely", "Secret", "Northern")
_NOUNS = ("Harbor", "Garden", "Signal", "Empire", "River", "Mirror", "Station", "Orchard", "Canyon", "Letter",
          "Carnival", "Lighthouse", "Frontier", "Kingdom", "Tide", "Engine", "Parade", "Island", "Crown", "Bridge")
_SETTINGS = ("a small coastal town", "a crowded city", "a remote island", "a mountain village", "a distant planet",
             "an old family house", "a desert highway", "a royal court", "a research station", "a quiet suburb")
_GENRE_PHRASES = {
    "action": "chases and fights", "comedy": "jokes and misunderstandings", "drama": "family conflict",
    "horror": "something lurking in the dark", "romance": "two people falling in love",
    "science fiction": "strange technology", "thriller": "a dangerous secret", "animation": "hand-drawn adventure",
    "documentary": "real events and interviews", "western": "outlaws and sheriffs", "mystery": "an unsolved crime",
    "fantasy": "magic and old legends",
}
HIDDEN_DIM = 8
HIDDEN_WEIGHT = 2.0
"""Scale of taste . latent in a user's choice logits (the hidden factor the text does not reveal)."""
GENRE_WEIGHT = 0.7
"""Scale of the user's genre affinity (visible in the text: what a text-only LM can exploit)."""
POPULARITY_WEIGHT = 0.6
SIM_VERSION = "1"


def simulate(*, n_items: int = 240, n_users: int = 1200, history: tuple[int, int] = (8, 20),
             seed: int = 0) -> Interactions:
    """A deterministic simulated catalog and interaction log (see the module docstring). Same seed, same data."""
    if not 2 <= n_items <= len(_ADJECTIVES) * len(_NOUNS) or n_users < 1 or not 2 <= history[0] <= history[1] < n_items:
        raise SpecError(f"simulate: need 2 <= n_items <= {len(_ADJECTIVES) * len(_NOUNS)}, n_users >= 1 and "
                        f"2 <= history min <= max < n_items; got {n_items}, {n_users}, {history}")
    rng = np.random.default_rng(seed)
    items = _catalog(rng, n_items)
    genre_matrix = np.array([[g in item.genres for g in GENRES] for item in items], dtype=np.float64)
    latent = rng.normal(size=(n_items, HIDDEN_DIM)) / np.sqrt(HIDDEN_DIM)
    popularity = rng.normal(size=n_items)
    histories = []
    for _ in range(n_users):
        taste = rng.normal(size=HIDDEN_DIM)
        affinity = rng.normal(size=len(GENRES))
        logits = HIDDEN_WEIGHT * latent @ taste + GENRE_WEIGHT * genre_matrix @ affinity / 1.5 \
            + POPULARITY_WEIGHT * popularity
        length = int(rng.integers(history[0], history[1] + 1))
        # sampling without replacement proportional to exp(logits): Gumbel top-k gives the order of engagement
        order = np.argsort(-(logits + rng.gumbel(size=n_items)))[:length]
        histories.append(tuple(int(i) for i in order))
    return Interactions(name=f"sim-movies-v{SIM_VERSION}-{n_items}i-{n_users}u-seed{seed}", items=tuple(items), histories=tuple(histories))


def _catalog(rng: np.random.Generator, n_items: int) -> list[Item]:
    pairs = rng.permutation(len(_ADJECTIVES) * len(_NOUNS))[:n_items]
    items = []
    for index, pair in enumerate(pairs):
        title = f"The {_ADJECTIVES[pair // len(_NOUNS)]} {_NOUNS[pair % len(_NOUNS)]}"
        genres = tuple(GENRES[g] for g in sorted(rng.choice(len(GENRES), size=int(rng.integers(1, 3)), replace=False)))
        setting = _SETTINGS[int(rng.integers(len(_SETTINGS)))]
        plot = " and ".join(_GENRE_PHRASES[g] for g in genres)
        kind = " and ".join(genres)
        description = f"{'An' if kind[0] in 'aeiou' else 'A'} {kind} film set in {setting}, full of {plot}."
        items.append(Item(index=index, source_id=str(index), title=title, genres=genres, description=description))
    return items


def co_engaged_pairs(data: Interactions, users: np.ndarray, window: int = 3) -> np.ndarray:
    """int64 [P, 2]: item pairs engaged by the same user within ``window`` steps of each other (both orders)."""
    pairs = []
    for u in users:
        h = data.histories[u]
        for i in range(len(h)):
            for j in range(i + 1, min(len(h), i + 1 + window)):
                pairs += [(h[i], h[j]), (h[j], h[i])]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


SIM_PRESETS = {
    "sim-movies": {},  # 240 items, 1200 users, 8-20 engagements each
    "sim-movies-small": {"n_items": 60, "n_users": 200, "history": (6, 12)},  # tests and --quick on tiny models
}
MOVIELENS_PREFIX = "movielens:"


def load_dataset(name: str) -> Interactions:
    """A simulator preset by name, or ``movielens:DIR`` (DIR/ratings.dat and DIR/movies.dat)."""
    if name.startswith(MOVIELENS_PREFIX):
        root = Path(name[len(MOVIELENS_PREFIX):])
        return load_movielens(root / "ratings.dat", root / "movies.dat", name=name)
    from edgelmm.registry import lookup

    return simulate(**lookup(SIM_PRESETS, name, what="interaction dataset"))
