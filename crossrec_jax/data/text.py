"""Example text: item text from item fields, history entries, candidate, via named templates.

An example reads  prefix, history entries (oldest first), then the candidate as a second segment:
  [CLS] "The user rated these movies: toy story (1995); ...: 4 out of 5. ..." [SEP]
        "Next movie: heat (1995); genres: action, crime" [SEP]
Each piece is rendered here as a string; `examples.py` tokenises the pieces separately and joins
them (dropping whole oldest entries to fit `max_len`), so pieces must be separated by whitespace:
BERT's pre-tokeniser splits there, so the joined tokens equal the tokens of the joined text.

Templates are format strings with these fields: {noun} and {nouns} (movie/movies, from the domain
name or an override), {item} (the item text), and in rated entries {rating}, {low}, {high} (the
domain scale, '%g') and {opinion} ("liked" above the middle of the scale, else "disliked").
History entries without a rating (implicit feedback, or a training row whose label is hidden by the
label fraction) use `unrated`.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from crossrec_jax.data import schema

# (field, format) in reading order; fields absent from `Items.fields` or empty for an item are left
# out. Items without a title fall back to their id.
DEFAULT_ITEM_FIELDS: tuple[tuple[str, str], ...] = (
    ("title", "{}"),
    ("year", " ({})"),
    ("author", ", by {}"),
    ("publisher", ", {}"),
    ("brand", ", by {}"),
    ("genres", "; genres: {}"),
    ("category", "; category: {}"),
)

# Domain-name keywords -> (noun, plural). First match wins; no match -> item/items.
NOUNS: tuple[tuple[tuple[str, ...], tuple[str, str]], ...] = (
    (("movie", "film", "ml-", "movielens", "netflix"), ("movie", "movies")),
    (("book", "bx", "goodreads"), ("book", "books")),
    (("amazon", "food", "grocery", "kitchen", "beauty", "fashion", "appliance", "product"),
     ("product", "products")),
)


def _check_formats(template, kind: str, fields: Sequence[str], probe: dict[str, str]) -> None:
  """Each format string in `fields` of `template` formats with the fields of `probe`, and each
  (field, format) of its `item_fields` has one '{}'; else a ValueError naming both."""
  for field in fields:
    try:
      getattr(template, field).format(**probe)
    except (KeyError, IndexError, ValueError) as e:
      raise ValueError(f"{kind} {template.name!r} field {field!r}: bad format string "
                       f"{getattr(template, field)!r} ({e!r}); allowed fields: "
                       f"{sorted(probe)}") from e
  for field, fmt in template.item_fields:
    if fmt.count("{}") != 1:
      raise ValueError(f"{kind} {template.name!r} item field {field!r}: format {fmt!r} "
                       "needs one '{}'")


@dataclasses.dataclass(frozen=True)
class Template:
  """Format strings of one example layout (see the module docstring for the fields)."""

  name: str
  prefix: str  # explicit ratings
  prefix_implicit: str  # implicit feedback
  rated: str  # history entry with a rating
  unrated: str  # history entry without one
  empty: str  # the whole history when the user has no visible prior interaction
  candidate: str
  item_fields: tuple[tuple[str, str], ...] = DEFAULT_ITEM_FIELDS

  def __post_init__(self):
    _check_formats(self, "template", ("prefix", "prefix_implicit", "rated", "unrated", "empty",
                                      "candidate"),
                   dict(noun="movie", nouns="movies", item="x", rating="3", low="1", high="5",
                        opinion="liked"))


TEMPLATES: Mapping[str, Template] = {
    "default": Template(
        name="default",
        prefix="The user rated these {nouns}:",
        prefix_implicit="The user chose these {nouns}:",
        rated="{item}: {rating} out of {high}.",
        unrated="{item}.",
        empty="none yet.",
        candidate="Next {noun}: {item}"),
    # After TALLRec (Bao et al., RecSys 2023): liked/disliked instead of numbers, a yes/no question.
    "tallrec": Template(
        name="tallrec",
        prefix="Given the user's {noun} history, tell whether the user will like the target "
               "{noun}. History:",
        prefix_implicit="Given the {nouns} the user chose, tell whether the user will like the "
                        "target {noun}. History:",
        rated="\"{item}\" ({opinion}),",
        unrated="\"{item}\",",
        empty="none.",
        candidate="Will the user like the target {noun} \"{item}\"?",
        item_fields=(("title", "{}"), ("year", " ({})"), ("author", ", by {}"))),
}


@dataclasses.dataclass(frozen=True)
class ProfileTemplate:
  """Format strings of the user-profile segment (`data.profile`; facts from `data/profile.py`).

  Each is one piece, tokenised once per distinct value and joined like history entries, so a
  profile of 1M examples costs a few thousand tokenisations. Fields: {noun}, {nouns}; `head`
  {count}; `mean` {mean}, {offset} (signed, e.g. '+0.3'), {high}; `likes` / `dislikes` {genres}
  (", "-joined); `item` {item} (one per top or bottom item, after the `top` / `bottom` intro; the
  item named by `item_fields`).
  `empty` replaces the whole profile when the user has no earlier rating.
  """

  name: str
  head: str
  mean: str
  likes: str
  dislikes: str
  top: str
  bottom: str
  item: str
  empty: str
  # Profile items are named briefly (a history entry or the candidate carries the full text).
  item_fields: tuple[tuple[str, str], ...] = (("title", "{}"), ("year", " ({})"))
  num_items: int = 2  # top and bottom items each (0: none)
  max_genres: int = 2  # liked and disliked genres each

  def __post_init__(self):
    _check_formats(self, "profile template", ("head", "mean", "likes", "dislikes", "top",
                                              "bottom", "item", "empty"),
                   dict(noun="movie", nouns="movies", count="3", mean="3.5", offset="+0.2",
                        high="5", genres="drama", item="x"))


_PROFILE = ProfileTemplate(
    name="default",
    head="User profile: {count} {nouns} rated,",
    mean="mean {mean} out of {high} ({offset} against the average).",
    likes="Likes {genres}.",
    dislikes="Dislikes {genres}.",
    top="Rated highest:",
    bottom="Rated lowest:",
    item="{item};",
    empty="User profile: no rated {nouns} yet.")
PROFILES: Mapping[str, ProfileTemplate] = {
    "default": _PROFILE,
    # The facts without items (~36 tokens against ~67 on ML-100K): for max_len <= 96, where the
    # default's items leave no room for a history entry.
    "short": dataclasses.replace(_PROFILE, name="short", top="", bottom="", item="", num_items=0),
}


def get_profile_template(spec: str | ProfileTemplate) -> ProfileTemplate:
  """A profile template by registry name (`PROFILES`), or the given `ProfileTemplate` itself."""
  if isinstance(spec, ProfileTemplate):
    return spec
  if spec not in PROFILES:
    raise ValueError(f"unknown profile template {spec!r} (data.profile); known: {sorted(PROFILES)} "
                     "or '' (off)")
  return PROFILES[spec]


def get_template(spec: str | Template) -> Template:
  """A template by registry name, or the given `Template` itself."""
  if isinstance(spec, Template):
    return spec
  if spec not in TEMPLATES:
    raise ValueError(f"unknown template {spec!r}; known: {sorted(TEMPLATES)} (or pass a Template)")
  return TEMPLATES[spec]


def domain_noun(name: str, override: str | tuple[str, str] | None = None) -> tuple[str, str]:
  """(noun, plural) for a domain: the override ("book" or ("book", "books")) or by name keyword."""
  if override is not None:
    return (override, override + "s") if isinstance(override, str) else tuple(override)
  lowered = name.lower()
  for keywords, nouns in NOUNS:
    if any(k in lowered for k in keywords):
      return nouns
  return "item", "items"


def format_rating(r: float) -> str:
  return f"{float(r):g}"


def item_texts(items: schema.Items, fields: Sequence[tuple[str, str]] = DEFAULT_ITEM_FIELDS
               ) -> np.ndarray:
  """[I] object array: each item's text from the fields it has (its id when it has no title)."""
  present = [(name, fmt) for name, fmt in fields if name in items.fields]
  titles = items.fields.get("title")
  out = np.empty(len(items), dtype=object)
  for i in range(len(items)):
    values = ((fmt, str(items.fields[name][i]).strip()) for name, fmt in present)
    text = "".join(fmt.format(v) for fmt, v in values if v)
    if titles is None or not str(titles[i]).strip():
      text = str(items.ids[i]) + text
    out[i] = " ".join(text.split())  # one space between words, no newlines or tabs
  return out


@dataclasses.dataclass(frozen=True)
class DomainText:
  """A template bound to one domain: renders its prefix, history entries and candidates."""

  template: Template
  noun: str
  nouns: str
  scale: schema.RatingScale
  items: np.ndarray  # [I] item texts

  def prefix(self) -> str:
    fmt = self.template.prefix_implicit if self.scale.implicit else self.template.prefix
    return fmt.format(noun=self.noun, nouns=self.nouns)

  def empty(self) -> str:
    return self.template.empty.format(noun=self.noun, nouns=self.nouns)

  def entry(self, item: int, rating: float | None) -> str:
    """One history entry; `rating` None (or an implicit domain) renders it without a rating."""
    kw = dict(noun=self.noun, nouns=self.nouns, item=self.items[item])
    if rating is None or self.scale.implicit:
      return self.template.unrated.format(**kw)
    liked = float(self.scale.normalise(np.float32(rating))) > 0.5
    return self.template.rated.format(rating=format_rating(rating),
                                      low=format_rating(self.scale.low),
                                      high=format_rating(self.scale.high),
                                      opinion="liked" if liked else "disliked", **kw)

  def candidate(self, item: int) -> str:
    return self.template.candidate.format(noun=self.noun, nouns=self.nouns, item=self.items[item])

  def example(self, history: Sequence[tuple[int, float | None]], candidate: int) -> tuple[str, str]:
    """(history segment, candidate segment) untruncated; history is (item, rating|None), oldest
    first. Tokenised as a pair, this is what `examples.py` assembles when nothing is dropped."""
    entries = [self.entry(i, r) for i, r in history] or [self.empty()]
    return " ".join([self.prefix()] + entries), self.candidate(candidate)


def domain_text(template: str | Template, domain: schema.Domain,
                noun: str | tuple[str, str] | None = None) -> DomainText:
  """Bind a template (name or object) to a domain: nouns from its name, its scale, item texts."""
  template = get_template(template)
  singular, plural = domain_noun(domain.name, noun)
  return DomainText(template=template, noun=singular, nouns=plural, scale=domain.scale,
                    items=item_texts(domain.items, template.item_fields))
