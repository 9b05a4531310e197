"""Where the word errors on hard sentences come from: the judge and the text, or our model.

    python scripts/sus_errors.py heard.jsonl [--setting "recipe default"] [--report errors.md]

Reads the transcripts that ``audioguide eval tts --transcripts`` writes (run it with ``--real`` so
the teachers' recordings of the same rows are judged too). Every reference word of the setting is
aligned to its transcript (jiwer, after the judge's normaliser) and sorted:

* **shared**: the teacher's recording of the same row loses that word too: the word or the judge,
  not our model (a rare word Whisper spells otherwise, a homophone);
* **ours only**: heard in the teacher's recording, lost in ours: the model's error. These are
  split further by what kind of word it was (article, other function word, a plural or singular
  heard as the other, a verb of the SUS list, other content words) and by whether the G2P read it
  from hibari's gold lexicon or had to guess it by rule (an out-of-lexicon word).

The split shows which of G2P, durations (short function words swallowed) and the model's acoustics
cost most.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter, defaultdict
from importlib import resources
from pathlib import Path

FUNCTION = {"the", "a", "an", "of", "to", "in", "on", "at", "or", "and", "that", "does", "did", "why", "was", "were",
            "beside", "beneath", "across", "toward", "against", "behind", "within", "among"}


def word_hits(reference: str, transcript: str) -> list[tuple[str, bool, str | None]]:
    """Per normalised reference word: (word, heard right, what was heard instead or None)."""
    import jiwer

    from audioguide.evaluation.asr import normalize

    ref, hyp = normalize(reference), normalize(transcript or "")
    if not ref:
        return []
    words, heard = ref.split(), hyp.split()
    out = [(w, True, None) for w in words]
    if not heard:
        return [(w, False, None) for w in words]
    for chunk in jiwer.process_words(ref, hyp).alignments[0]:
        if chunk.type in ("substitute", "delete"):
            for k in range(chunk.ref_start_idx, chunk.ref_end_idx):
                j = chunk.hyp_start_idx + (k - chunk.ref_start_idx)
                out[k] = (words[k], False, heard[j] if chunk.type == "substitute" and j < chunk.hyp_end_idx else None)
    return out


def kind(word: str, instead: str | None, verbs: set[str]) -> str:
    if word in ("a", "an", "the"):
        return "article"
    if word in FUNCTION:
        return "other function word"
    if instead and (instead == word + "s" or word == instead + "s" or instead == word + "es" or word == instead + "es"):
        return "plural / singular"
    if word in verbs:
        return "SUS verb"
    return "other content word"


def main() -> None:
    from audioguide.corpus.texts import SUS_VERBS
    from audioguide.evaluation.tts import REAL_LABEL

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("transcripts", nargs="+", type=Path)
    ap.add_argument("--setting", default="recipe default")
    ap.add_argument("--report", type=Path)
    args = ap.parse_args()
    rows = [json.loads(line) for path in args.transcripts for line in path.read_text().splitlines() if line.strip()]
    real = {r["row_id"]: r for r in rows if r["setting"] == REAL_LABEL}
    ours = [r for r in rows if r["setting"] == args.setting]
    if not ours or not real:
        raise SystemExit(f"error: need the setting {args.setting!r} and the real recordings ({REAL_LABEL!r}) in the transcripts")
    with (resources.files("hibari") / "assets" / "lexicon_us_gold.json.gz").open("rb") as f:
        gold = set(json.load(gzip.open(f)))
    verbs = {v for pair in SUS_VERBS for v in pair}
    counts: Counter = Counter()
    by_kind: dict[str, Counter] = defaultdict(Counter)
    examples: dict[str, list[str]] = defaultdict(list)
    words = 0
    for r in ours:
        teacher = real.get(r["row_id"])
        if teacher is None:
            continue
        theirs = {i: ok for i, (_, ok, _) in enumerate(word_hits(r["reference"], teacher["transcript"]))}
        for i, (w, ok, instead) in enumerate(word_hits(r["reference"], r["transcript"])):
            words += 1
            if ok:
                continue
            if not theirs.get(i, True):
                counts["shared with the teacher's recording"] += 1
                continue
            counts["ours only"] += 1
            k = kind(w, instead, verbs)
            by_kind[k]["errors"] += 1
            by_kind[k]["out of lexicon"] += w not in gold
            if len(examples[k]) < 6:
                examples[k].append(f"{w} -> {instead or '(lost)'}")
    lines = [f"## Word errors of {args.setting!r} on {len(ours)} sentences ({words} reference words)", "",
             "| errors | words | % of reference words |", "|---|---|---|"]
    lines += [f"| {k} | {v} | {100 * v / max(words, 1):.1f} % |" for k, v in counts.items()]
    lines += ["", "Ours only, by kind of word:", "", "| kind | errors | out of the G2P lexicon | examples |", "|---|---|---|---|"]
    for k, c in sorted(by_kind.items(), key=lambda kv: -kv[1]["errors"]):
        lines.append(f"| {k} | {c['errors']} | {c['out of lexicon']} | {'; '.join(examples[k])} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.report:
        args.report.write_text(text)


if __name__ == "__main__":
    main()
