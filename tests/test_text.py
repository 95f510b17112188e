"""Tests for data/text.py: item text, nouns, templates, history entries."""

import dataclasses

import numpy as np
import pytest

from crossrec_jax.data import schema, text


def _items(**fields):
  n = len(next(iter(fields.values())))
  return schema.Items(ids=np.array([f"id{i}" for i in range(n)], object),
                      fields={k: np.array(v, object) for k, v in fields.items()})


def _domain(name="ml-100k", scale=schema.RatingScale(1, 5), **fields):
  items = _items(**fields)
  return schema.build_domain(name, user_ids=["a"], item_ids=["id0"],
                             ratings=None if scale.implicit else [4.0],
                             times=[0], items=items, scale=scale)


def test_item_texts_use_the_fields_that_exist():
  movies = _items(title=["Toy Story", "Heat"], year=["1995", ""], genres=["Animation, Comedy", "Crime"])
  assert text.item_texts(movies).tolist() == ["Toy Story (1995); genres: Animation, Comedy",
                                              "Heat; genres: Crime"]
  books = _items(title=["Dune"], author=["Frank Herbert"], year=["1965"], publisher=["Chilton"])
  assert text.item_texts(books).tolist() == ["Dune (1965), by Frank Herbert, Chilton"]
  products = _items(title=["Kettle  with\nwhistle"], brand=["Acme"], category=["Kitchen"])
  assert text.item_texts(products).tolist() == ["Kettle with whistle, by Acme; category: Kitchen"]
  untitled = _items(title=["", "Named"], year=["2001", "2002"])
  assert text.item_texts(untitled).tolist() == ["id0 (2001)", "Named (2002)"]
  assert text.item_texts(_items(isbn=["x"])).tolist() == ["id0"]  # no known field: the id


def test_domain_noun():
  assert text.domain_noun("ml-1m") == ("movie", "movies")
  assert text.domain_noun("bookcrossing") == ("book", "books")
  assert text.domain_noun("amazon_kitchen") == ("product", "products")
  assert text.domain_noun("podcasts") == ("item", "items")
  assert text.domain_noun("ml-1m", "film") == ("film", "films")
  assert text.domain_noun("x", ("mouse", "mice")) == ("mouse", "mice")


def test_template_registry_and_validation():
  assert text.get_template("default").name == "default"
  assert text.get_template("tallrec").name == "tallrec"
  custom = dataclasses.replace(text.TEMPLATES["default"], name="mine", candidate="Rate {item}")
  assert text.get_template(custom) is custom
  with pytest.raises(ValueError, match="known: \\['default', 'tallrec'\\]"):
    text.get_template("nope")
  with pytest.raises(ValueError, match="field 'rated'.*allowed fields"):
    dataclasses.replace(text.TEMPLATES["default"], rated="{item} {stars}")
  with pytest.raises(ValueError, match="needs one"):
    dataclasses.replace(text.TEMPLATES["default"], item_fields=(("title", "no placeholder"),))


def test_entries_and_example_default():
  d = _domain(title=["Toy Story", "Heat"], year=["1995", "1995"])
  dt = text.domain_text("default", d)
  assert dt.prefix() == "The user rated these movies:"
  assert dt.entry(0, 4.0) == "Toy Story (1995): 4 out of 5."
  assert dt.entry(0, 3.5) == "Toy Story (1995): 3.5 out of 5."
  assert dt.entry(1, None) == "Heat (1995)."  # hidden label: no rating
  assert dt.candidate(1) == "Next movie: Heat (1995)"
  assert dt.example([(0, 4.0), (1, None)], 1) == (
      "The user rated these movies: Toy Story (1995): 4 out of 5. Heat (1995).",
      "Next movie: Heat (1995)")
  assert dt.example([], 0) == ("The user rated these movies: none yet.", "Next movie: Toy Story (1995)")


def test_tallrec_opinion_threshold_and_implicit():
  d = _domain(name="bookcrossing", scale=schema.RatingScale(1, 10), title=["Dune"], author=["Herbert"])
  dt = text.domain_text("tallrec", d)
  assert dt.entry(0, 6.0) == "\"Dune, by Herbert\" (liked),"  # (6-1)/9 > 0.5
  assert dt.entry(0, 5.0) == "\"Dune, by Herbert\" (disliked),"
  assert dt.candidate(0) == "Will the user like the target book \"Dune, by Herbert\"?"
  imp = text.domain_text("default", _domain(name="amazon_food", scale=schema.IMPLICIT, title=["Tea"]))
  assert imp.prefix() == "The user chose these products:"
  assert imp.entry(0, 1.0) == "Tea."  # implicit: never a rating


def test_profile_templates_registry_and_rendering():
  from crossrec_jax.data import profile
  from test_profile import hand_domain  # pylint: disable=g-import-not-at-top
  assert sorted(text.PROFILES) == ["default", "short"]
  with pytest.raises(ValueError, match="unknown profile template 'x' \\(data.profile\\)"):
    text.get_profile_template("x")
  with pytest.raises(ValueError, match="profile template 'bad' field 'head'.*allowed fields"):
    dataclasses.replace(text.PROFILES["default"], name="bad", head="{ratings} rated")
  d = hand_domain()
  rows = np.arange(6)
  stats = profile.profile_stats(d, rows, np.ones(6, bool), np.array([0, 5]))
  dt = text.domain_text("default", d)
  texts, slots = profile.profile_pieces(stats, text.PROFILES["default"], dt, d.items,
                                        d.interactions.item)
  render = lambda e: " ".join(texts[j] for j in slots[e] if j >= 0)
  assert render(0) == "User profile: no rated movies yet."
  assert render(1) == ("User profile: 5 movies rated, mean 3.4 out of 5 (+0.0 against the average). "
                       "Likes Drama. Dislikes Horror. Rated highest: T1 (2001); T0 (2001); "
                       "Rated lowest: T3 (2001); T4 (2001);")
  short = text.PROFILES["short"]
  stats = profile.profile_stats(d, rows, np.ones(6, bool), np.array([5]), num_items=0)
  texts, slots = profile.profile_pieces(stats, short, dt, d.items, d.interactions.item)
  assert " ".join(texts[j] for j in slots[0] if j >= 0).endswith("Likes Drama. Dislikes Horror.")
