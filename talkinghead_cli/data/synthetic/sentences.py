"""The corpus's English sentences: a small grammar, WordNet's usage examples, phonetic balance.

The built-in list is two files beside this one (``SOURCES.md`` says where each comes from
and under which licence), written by :func:`main` (``python -m
talkinghead_cli.data.synthetic.sentences``):

- ``sentences.txt``: sentences generated from the templates below with a fixed seed
  (many names, bilabials and open vowels, a narrow grammar);
- ``sentences_wordnet.txt``: usage examples from the glosses of WordNet 3.0 (Debian
  ``wordnet-base``), everyday English of varied grammar and vocabulary.

Both are phonemised with the CMU dictionary that ships in the ``pocketsphinx`` package
and chosen greedily so that rare phonemes (ZH, OY, UH, TH, ...) occur often; every word
is in the dictionary, so every sentence is pronounceable. Users can pass their own list
with ``--sentences-file``.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

from talkinghead_cli.errors import UserError

SENTENCES_FILE = Path(__file__).with_name("sentences.txt")
WORDNET_FILE = Path(__file__).with_name("sentences_wordnet.txt")
BUILTIN_FILES = (SENTENCES_FILE, WORDNET_FILE)
WORDNET_DIR = Path("/usr/share/wordnet")  # Debian wordnet-base
# Examples with these words are left out of the corpus (slurs, profanity, violence against people).
BLOCK = set("""nigger nigga negro negroes kike spic chink fag faggot dyke whore slut bitch bastard cunt fuck fucking
shit damn damned hell ass arse piss prick cock dick pussy tits rape raped raping rapist kill killed killing
murder murdered suicide nazi nazis hitler sex sexual sexy porn nude naked drunk drunken dope cocaine heroin
bomb bombs torture tortured lynch lynched slave slaves""".split())
NAMES = "Bob Judy Mike Paula Thomas Vivian George Joyce Ruth Shawn Nora Hugo Zoe Kevin Wanda Chad".split()
ADJ = ("big small yellow red blue green old young quiet noisy smooth rough warm cool cheap beige "
       "thick thin fresh brown pink huge tiny heavy shiny usual wooden golden curious happy").split()
NOUNS = ("boy girl dog cat book chair coin toy garage treasure judge ship fox cup boat wheel "
         "bridge window garden mouse bottle vision horse pillow basket jacket fish house ring oyster "
         "foot wood puzzle engine violin umbrella sugar measure mirror feather shoe cookie voice").split()
VERBS_PAST = ("pushed pulled moved found saw bought sold took washed painted cooked fixed showed "
              "watched joined measured touched threw caught brought chose kept hid loved shared".split())
VERBS = ("push pull move find see buy sell take wash paint cook fix show watch join measure touch "
         "throw catch bring choose keep hide love share".split())
PLACES = ("near the window|beside the bridge|under the table|in the garage|on the boat|at the zoo|"
          "by the river|behind the house|through the woods|over the fence|inside the box|"
          "across the yard|along the shore|beneath the bench").split("|")
TIMES = ("this morning|last night|at noon|on Tuesday|in July|every autumn|before lunch|"
         "after the show|during the storm|at the usual hour|early today|this evening").split("|")

TEMPLATES = (
    "The {adj} {noun} {vpast} the {adj2} {noun2} {place}.",
    "{name} {vpast} a {adj} {noun} {time}.",
    "Did {name} {verb} the {adj} {noun} {place}?",
    "Please {verb} the {noun} and the {adj} {noun2} {time}.",
    "{name} and {name2} {vpast} the {noun} {place}.",
    "Why did the {adj} {noun} {verb} the {noun2}?",
    "We {vpast} {name}'s {adj} {noun} {time}.",
    "Nobody could {verb} a {adj} {noun} {place}.",
    "My {adj} {noun} {vpast} your {noun2} {time}.",
    "{name} will {verb} the {noun} {place} {time}.",
)


def generate(n_candidates: int = 20000, seed: int = 7) -> list[str]:
    """Distinct candidate sentences from the templates (deterministic)."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    for _ in range(n_candidates):
        t = rng.choice(TEMPLATES)
        n1, n2 = rng.sample(NAMES, 2)
        a1, a2 = rng.sample(ADJ, 2)
        o1, o2 = rng.sample(NOUNS, 2)
        s = t.format(adj=a1, adj2=a2, noun=o1, noun2=o2, name=n1, name2=n2, vpast=rng.choice(VERBS_PAST),
                     verb=rng.choice(VERBS), place=rng.choice(PLACES), time=rng.choice(TIMES))
        s = s[0].upper() + s[1:]
        s = re.sub(r"\b(a) ([aeiou])", r"an \2", s)
        seen.setdefault(s, None)
    return list(seen)


def load_cmudict() -> dict[str, list[str]]:
    """The CMU pronouncing dictionary shipped with pocketsphinx: word -> ARPAbet (no stress)."""
    from importlib.resources import files

    path = Path(str(files("pocketsphinx").joinpath("model/en-us/cmudict-en-us.dict")))
    out: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if parts and "(" not in parts[0]:
            out[parts[0].lower()] = [re.sub(r"\d", "", p) for p in parts[1:]]
    return out


def words(sentence: str) -> list[str]:
    return re.findall(r"[a-z']+", sentence.lower())


def phonemise(sentence: str, cmu: dict[str, list[str]]) -> list[str] | None:
    """ARPAbet of a sentence, or None if a word is not in the dictionary."""
    out: list[str] = []
    for w in words(sentence):
        pron = cmu.get(w) or (cmu.get(w[:-2]) + ["Z"] if w.endswith("'s") and cmu.get(w[:-2]) else None)
        if pron is None:
            return None
        out += pron
    return out


def select_balanced(candidates: list[str], cmu: dict, count: int) -> list[str]:
    """Greedy choice: each step takes the sentence with the rarest phonemes so far."""
    prons = {s: phonemise(s, cmu) for s in candidates}
    pool = [s for s in candidates if prons[s] is not None]
    counts: Counter = Counter()
    chosen: list[str] = []
    for _ in range(min(count, len(pool))):
        best = max(pool[:400], key=lambda s: sum(1.0 / (1 + counts[p]) for p in set(prons[s])))
        pool.remove(best)
        chosen.append(best)
        counts.update(prons[best])
    return chosen


def wordnet_examples(folder: Path = WORDNET_DIR, min_words: int = 6, max_words: int = 16) -> list[str]:
    """Usage examples quoted in WordNet's glosses, as sentences (capitalised, end punctuation).

    Kept: letters and plain punctuation only, ``min_words..max_words`` words, none in
    :data:`BLOCK`; first occurrence of each (case-insensitive), in file order.
    """
    seen: dict[str, str] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (folder / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:  # the licence header
                continue
            for ex in re.findall(r'"([^"]+)"', line.split("|", 1)[1]):
                ex = ex.strip()
                n = len(words(ex))
                if (re.search(r"[^A-Za-z ,.'?!-]", ex) or "--" in ex or not min_words <= n <= max_words
                        or BLOCK & set(words(ex))):
                    continue
                ex = ex[0].upper() + ex[1:] + ("" if ex[-1] in ".?!" else ".")
                seen.setdefault(ex.lower(), ex)
    return list(seen.values())


def load_sentences(path: str | Path | None = None) -> list[str]:
    """Sentences, one a line (blank lines and ``#`` comments skipped); None: the built-in
    lists (:data:`BUILTIN_FILES`), without repeats.

    Raises:
        UserError: missing/unreadable file or no sentence in it.
    """
    if path is None:
        return list(dict.fromkeys(s for f in BUILTIN_FILES for s in load_sentences(f)))
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError("cannot read the sentences file", p, "give a UTF-8 text file, one sentence a line") from e
    out = [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]
    if not out:
        raise UserError("the sentences file has no sentences", p, "write one sentence a line")
    return out


def main() -> None:  # pragma: no cover - regenerates the shipped data files
    from talkinghead_cli.atomic import atomic_file

    cmu = load_cmudict()
    examples = wordnet_examples()
    random.Random(13).shuffle(examples)  # the greedy choice looks at a window of candidates
    for path, candidates, count in ((SENTENCES_FILE, generate(), 2000), (WORDNET_FILE, examples, 3000)):
        chosen = select_balanced(candidates, cmu, count)
        with atomic_file(path) as tmp:
            tmp.write_text("\n".join(chosen) + "\n", encoding="utf-8")
        print(f"{len(chosen)} sentences from {len(candidates)} candidates -> {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
