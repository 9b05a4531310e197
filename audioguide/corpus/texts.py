"""A varied English sentence generator for speech corpora (seeded, offline, no external text).

Sentences are assembled from templates over word lists: statements, questions, exclamations,
numbers, years, dates, times, money, names and places, short and long. ``held_out`` sentences come
from a separate template set, so evaluation text is never seen in training.
"""

from __future__ import annotations

import numpy as np

NAMES = ["Alice", "Marcus", "Priya", "Tom", "Elena", "Kenji", "Sarah", "Daniel", "Fatima", "Oliver", "Grace",
         "Lucas", "Nadia", "Henry", "Zoe", "Ivan", "Mei", "Carlos", "Hannah", "Samuel"]
PLACES = ["the station", "the library", "the old harbour", "the market", "Chicago", "the hospital", "the museum",
          "the village", "the airport", "the river", "Denver", "the bakery", "the garden", "London", "the office"]
THINGS = ["the blue umbrella", "a heavy box", "the letters", "a cup of tea", "the map", "two tickets", "the keys",
          "a small radio", "the report", "fresh bread", "the camera", "an old bicycle", "the paintings", "a warm coat"]
VERBS_PAST = ["found", "carried", "forgot", "bought", "opened", "painted", "borrowed", "lost", "sold", "repaired",
              "wrapped", "noticed", "cleaned", "returned", "described"]
ADJ = ["quiet", "bright", "strange", "careful", "tired", "cheerful", "narrow", "cold", "busy", "gentle", "sudden",
       "curious", "patient", "distant", "early"]
ADV = ["slowly", "quickly", "quietly", "carefully", "suddenly", "happily", "easily", "rarely", "gently", "eagerly"]
NOUNS = ["morning", "evening", "storm", "meeting", "journey", "concert", "lesson", "holiday", "garden", "kitchen",
         "window", "mountain", "problem", "answer", "question", "story", "engine", "signal", "harvest", "letter"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]

TRAIN_TEMPLATES = [
    "{name} {verb} {thing} near {place}.",
    "The {adj} {noun} ended {adv} before {name} arrived.",
    "Did {name} really leave {thing} at {place}?",
    "We waited {num} minutes for the {adj} train to {place}.",
    "On {month} {day}, {year}, {name} {verb} {thing}.",
    "It costs {money} to send {thing} to {place}.",
    "Meet me at {place} at {time}, and bring {thing}.",
    "Why was the {noun} so {adj} this {noun2}?",
    "{name} and {name2} {adv} walked to {place} after the {noun}.",
    "There are {num} {noun}s in the {adj} building on Main Street.",
    "What a {adj} {noun} that was!",
    "Please tell {name} that the {noun} starts at {time}.",
    "{name} said the {noun} was {adj}, but nobody believed it.",
    "I think {thing} is still at {place}, under the {noun}.",
    "Yes.",
    "No, thank you.",
    "The {noun} was {adj}, the {noun2} was {adj2}, and the {noun3} was gone.",
]
HELD_OUT_TEMPLATES = [
    "Before the {noun} began, {name} {verb} {thing} and hurried to {place}.",
    "How many {noun}s did {name} count on {month} {day}?",
    "The {adj} clerk at {place} charged {money} for {thing}.",
    "At {time} the {noun} became {adj}, so we stayed home.",
]
# Semantically unpredictable sentences (Benoit et al. 1996 SUS structures): grammatical, meaningless.
SUS_TEMPLATES = [
    "The {adj} {noun} {verb} the {noun2}.",
    "{adv} the {noun} {verb} a {adj} {noun2}.",
    "Why does the {noun} eat the {adj} {noun2}?",
    "The {noun} that {verb} the {noun2} was {adj}.",
]


def _fill(template: str, rng: np.random.Generator) -> str:
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    hour, minute = int(rng.integers(1, 13)), int(rng.choice([0, 5, 15, 20, 30, 45]))
    values = {
        "name": pick(NAMES), "name2": pick(NAMES), "place": pick(PLACES), "thing": pick(THINGS),
        "verb": pick(VERBS_PAST), "adj": pick(ADJ), "adj2": pick(ADJ), "adv": pick(ADV),
        "noun": pick(NOUNS), "noun2": pick(NOUNS), "noun3": pick(NOUNS), "month": pick(MONTHS),
        "day": str(int(rng.integers(1, 29))), "year": str(int(rng.integers(1950, 2031))),
        "num": str(int(rng.choice([2, 3, 7, 12, 15, 24, 40, 99, 150, 1200]))),
        "money": f"${int(rng.integers(1, 500))}.{int(rng.integers(0, 100)):02d}",
        "time": f"{hour}:{minute:02d}" if minute else f"{hour} o'clock",
    }
    text = template.format(**values)
    return text[0].upper() + text[1:]


def sentences(n: int, seed: int, split: str = "train") -> list[str]:
    """``n`` distinct sentences for ``split``: ``train``, ``held_out`` (unseen templates) or ``sus``."""
    templates = {"train": TRAIN_TEMPLATES, "held_out": HELD_OUT_TEMPLATES, "sus": SUS_TEMPLATES}[split]
    rng = np.random.default_rng([seed, len(split)])
    out: dict[str, None] = {}
    tries = 0
    while len(out) < n and tries < 50 * n:
        out[_fill(templates[int(rng.integers(len(templates)))], rng)] = None
        tries += 1
    return list(out)
