"""Toy English: a small probabilistic grammar whose sentences carry gold subject-verb agreement facts.

Every sentence is lowercase words separated by single spaces ("." is a word of its own), so
word index i is the i-th whitespace token. The generator records, for every verb, where its
subject's head noun is and how many nouns of the other number ("attractors") sit in between;
those facts drive the agreement classifier and the Linzen et al. (2016) number-agreement probe.

Grammar (probabilities are keyword arguments of `generate_sentence`):

    S   -> NP VP "."
    NP  -> Det Adj* N [PP | RC] | Pronoun           (RC only while nesting depth < max_depth)
    PP  -> Prep Det Adj* N                          (its noun is a potential attractor)
    RC  -> "that" VP                                (subject-relative: "the dog that sees the cats")
         | "that" NP Vt                             (object-relative:  "the dog that the cats see")
    VP  -> Vi | Vt NP | Cop Adj                     (Cop is "is"/"are")
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------------------------
# Lexicon. Noun, verb and adjective sets are disjoint on purpose: a word's category (and, for
# nouns and verbs, its number) must be recoverable from the word alone.
# ---------------------------------------------------------------------------------------------

NOUNS: tuple[tuple[str, str], ...] = (
    ("dog", "dogs"),
    ("cat", "cats"),
    ("child", "children"),
    ("man", "men"),
    ("woman", "women"),
    ("mouse", "mice"),
    ("goose", "geese"),
    ("person", "people"),
    ("ox", "oxen"),
    ("wolf", "wolves"),
    ("knife", "knives"),
    ("wife", "wives"),
    ("thief", "thieves"),
    ("baby", "babies"),
    ("lady", "ladies"),
    ("puppy", "puppies"),
    ("city", "cities"),
    ("story", "stories"),
    ("fox", "foxes"),
    ("box", "boxes"),
    ("boy", "boys"),
    ("girl", "girls"),
    ("teacher", "teachers"),
    ("student", "students"),
    ("farmer", "farmers"),
    ("doctor", "doctors"),
    ("king", "kings"),
    ("queen", "queens"),
    ("baker", "bakers"),
    ("pilot", "pilots"),
    ("singer", "singers"),
    ("writer", "writers"),
    ("painter", "painters"),
    ("sailor", "sailors"),
    ("soldier", "soldiers"),
    ("friend", "friends"),
    ("neighbor", "neighbors"),
    ("bird", "birds"),
    ("horse", "horses"),
    ("cow", "cows"),
    ("bear", "bears"),
    ("lion", "lions"),
    ("tiger", "tigers"),
    ("rabbit", "rabbits"),
    ("frog", "frogs"),
    ("duck", "ducks"),
    ("monkey", "monkeys"),
    ("snake", "snakes"),
    ("bee", "bees"),
    ("spider", "spiders"),
    ("robot", "robots"),
    ("car", "cars"),
    ("truck", "trucks"),
    ("boat", "boats"),
    ("table", "tables"),
    ("chair", "chairs"),
    ("key", "keys"),
    ("book", "books"),
    ("cup", "cups"),
    ("tree", "trees"),
    ("house", "houses"),
    ("garden", "gardens"),
    ("river", "rivers"),
    ("village", "villages"),
    ("school", "schools"),
    ("window", "windows"),
    ("door", "doors"),
    ("lamp", "lamps"),
    ("clock", "clocks"),
    ("bottle", "bottles"),
    ("letter", "letters"),
    ("picture", "pictures"),
    ("song", "songs"),
    ("apple", "apples"),
    ("cake", "cakes"),
    ("flower", "flowers"),
    ("stone", "stones"),
    ("star", "stars"),
    ("cloud", "clouds"),
    ("ship", "ships"),
    ("bridge", "bridges"),
    ("tower", "towers"),
    ("hill", "hills"),
    ("forest", "forests"),
    ("road", "roads"),
    ("kitten", "kittens"),
    ("nurse", "nurses"),
    ("judge", "judges"),
    ("chef", "chefs"),
    ("guard", "guards"),
    ("hunter", "hunters"),
    ("dancer", "dancers"),
    ("player", "players"),
    ("author", "authors"),
    ("scientist", "scientists"),
    ("engineer", "engineers"),
    ("uncle", "uncles"),
    ("aunt", "aunts"),
    ("owl", "owls"),
    ("eagle", "eagles"),
)

ADJECTIVES: tuple[str, ...] = (
    "big",
    "small",
    "old",
    "young",
    "happy",
    "sad",
    "tall",
    "short",
    "red",
    "blue",
    "green",
    "yellow",
    "black",
    "white",
    "brown",
    "quiet",
    "loud",
    "clever",
    "silly",
    "brave",
    "shy",
    "kind",
    "angry",
    "calm",
    "busy",
    "lazy",
    "strong",
    "weak",
    "rich",
    "poor",
    "famous",
    "hungry",
    "sleepy",
    "tiny",
    "huge",
    "gentle",
    "proud",
    "lucky",
    "noisy",
    "friendly",
    "strange",
    "funny",
    "wise",
    "wild",
    "bright",
    "dark",
    "heavy",
    "soft",
    "pretty",
    "curious",
    "careful",
    "grumpy",
    "polite",
    "cheerful",
    "ancient",
    "empty",
)

# (singular, plural) present-tense forms.
INTRANSITIVE_VERBS: tuple[tuple[str, str], ...] = (
    ("runs", "run"),
    ("sleeps", "sleep"),
    ("laughs", "laugh"),
    ("sings", "sing"),
    ("dances", "dance"),
    ("smiles", "smile"),
    ("cries", "cry"),
    ("jumps", "jump"),
    ("swims", "swim"),
    ("walks", "walk"),
    ("waits", "wait"),
    ("falls", "fall"),
    ("shines", "shine"),
    ("barks", "bark"),
    ("arrives", "arrive"),
    ("disappears", "disappear"),
    ("works", "work"),
    ("plays", "play"),
    ("sits", "sit"),
    ("stands", "stand"),
    ("rests", "rest"),
    ("travels", "travel"),
    ("wins", "win"),
    ("shouts", "shout"),
    ("whistles", "whistle"),
    ("yawns", "yawn"),
    ("sneezes", "sneeze"),
    ("coughs", "cough"),
    ("grows", "grow"),
    ("hides", "hide"),
    ("listens", "listen"),
    ("talks", "talk"),
)

TRANSITIVE_VERBS: tuple[tuple[str, str], ...] = (
    ("sees", "see"),
    ("likes", "like"),
    ("loves", "love"),
    ("hates", "hate"),
    ("follows", "follow"),
    ("chases", "chase"),
    ("helps", "help"),
    ("knows", "know"),
    ("finds", "find"),
    ("meets", "meet"),
    ("watches", "watch"),
    ("visits", "visit"),
    ("admires", "admire"),
    ("remembers", "remember"),
    ("greets", "greet"),
    ("pushes", "push"),
    ("pulls", "pull"),
    ("carries", "carry"),
    ("kicks", "kick"),
    ("touches", "touch"),
    ("fears", "fear"),
    ("ignores", "ignore"),
    ("praises", "praise"),
    ("calls", "call"),
    ("thanks", "thank"),
    ("hears", "hear"),
    ("blames", "blame"),
    ("trusts", "trust"),
    ("teaches", "teach"),
    ("catches", "catch"),
    ("draws", "draw"),
    ("paints", "paint"),
    ("builds", "build"),
    ("fixes", "fix"),
    ("holds", "hold"),
)

COPULA: tuple[str, str] = ("is", "are")

# "the" is repeated so it dominates, as in real text. "a" becomes "an" before a vowel.
SINGULAR_DETERMINERS: tuple[str, ...] = ("the", "the", "the", "a", "a", "this", "every", "each")
PLURAL_DETERMINERS: tuple[str, ...] = ("the", "the", "the", "these", "those", "some", "many", "two", "three", "several")
PREPOSITIONS: tuple[str, ...] = ("near", "behind", "beside", "under", "above", "with", "from", "by", "around", "across")
SUBJECT_PRONOUNS: dict[str, str] = {"he": "sg", "she": "sg", "it": "sg", "they": "pl"}
OBJECT_PRONOUNS: dict[str, str] = {"him": "sg", "her": "sg", "it": "sg", "them": "pl"}
RELATIVIZER = "that"
PERIOD = "."

# Number of every word that carries number on its own (nouns and pronouns).
NOUN_NUMBER: dict[str, str] = {
    **{sg: "sg" for sg, _ in NOUNS},
    **{pl: "pl" for _, pl in NOUNS},
    **SUBJECT_PRONOUNS,
    **OBJECT_PRONOUNS,
}

_VERB_PAIRS = INTRANSITIVE_VERBS + TRANSITIVE_VERBS + (COPULA,)
_VERB_NUMBER: dict[str, str] = {w: num for pair in _VERB_PAIRS for w, num in zip(pair, ("sg", "pl"))}
_VERB_FLIP: dict[str, str] = {**{sg: pl for sg, pl in _VERB_PAIRS}, **{pl: sg for sg, pl in _VERB_PAIRS}}

VOCABULARY: tuple[str, ...] = tuple(
    sorted(
        {
            *NOUN_NUMBER,
            *ADJECTIVES,
            *_VERB_NUMBER,
            *SINGULAR_DETERMINERS,
            *PLURAL_DETERMINERS,
            "an",
            *PREPOSITIONS,
            RELATIVIZER,
            PERIOD,
        }
    )
)


def verb_number(word: str) -> str | None:
    """Return "sg" or "pl" for a present-tense verb form, None for any other word."""
    return _VERB_NUMBER.get(word)


def noun_number(word: str) -> str | None:
    """Return "sg" or "pl" for a noun or pronoun, None for any other word."""
    return NOUN_NUMBER.get(word)


def flip_verb(word: str) -> str:
    """Return the other number's form of a verb ("runs" <-> "run", "is" <-> "are")."""
    return _VERB_FLIP[word]


def split_seed(seed: int, name: str) -> int:
    """Derive a stable sub-seed for a named split ("train", "test", ...) of a base seed.

    hashlib rather than hash(): Python salts str hashes per process, which would break
    reproducibility across runs.
    """
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


# ---------------------------------------------------------------------------------------------
# Sentence structure. Nodes hold word *positions*, not words, so a sentence with a flipped verb
# can share the tree of the original (translation.py linearizes these trees).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrepPhrase:
    """A prepositional phrase attached to a noun: "near the tables"."""

    prep: int
    np: NounPhrase


@dataclass(frozen=True)
class VerbPhrase:
    """A verb with its complement: an object NP, a predicate adjective, or nothing."""

    verb: int
    obj: NounPhrase | None = None
    adj: int | None = None


@dataclass(frozen=True)
class RelClause:
    """A relative clause; `subject` is None for subject-relatives (the gap is the subject)."""

    that: int
    subject: NounPhrase | None
    vp: VerbPhrase


@dataclass(frozen=True)
class NounPhrase:
    """Det Adj* N [PP | RC], or a bare pronoun (det None, no adjectives)."""

    det: int | None
    adjs: tuple[int, ...]
    noun: int
    number: str
    pp: PrepPhrase | None = None
    rc: RelClause | None = None


@dataclass(frozen=True)
class Clause:
    """The main clause: subject, verb phrase, final period."""

    subject: NounPhrase
    vp: VerbPhrase
    period: int


@dataclass(frozen=True)
class VerbFact:
    """Gold agreement fact for one verb of a sentence."""

    verb_pos: int
    subject_pos: int  # position of the subject's head noun or pronoun
    number: str  # "sg" | "pl": the subject's number, i.e. the number the verb must have
    n_attractors: int  # nouns/pronouns of the other number strictly between subject and verb
    in_relative_clause: bool


@dataclass(frozen=True)
class Sentence:
    """A Toy English sentence with the agreement facts of all its verbs (in word order)."""

    words: tuple[str, ...]
    verbs: tuple[VerbFact, ...]
    # The parse, for translation; excluded from equality so hand-built sentences compare fine.
    tree: Clause | None = field(default=None, compare=False, repr=False)

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def main_verb_index(self) -> int:
        """Index into `verbs` of the main-clause verb (there is exactly one)."""
        return next(i for i, v in enumerate(self.verbs) if not v.in_relative_clause)


# ---------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Config:
    max_depth: int
    p_relative: float
    p_object_relative: float
    p_object_rc: float
    p_pp: float
    p_adj: float
    p_pronoun: float
    p_plural: float
    p_transitive: float
    p_copula: float


class _Builder:
    """Appends words left to right and records verb facts as verbs are emitted."""

    def __init__(self, rng: random.Random, cfg: _Config) -> None:
        self.rng = rng
        self.cfg = cfg
        self.words: list[str] = []
        self.facts: list[tuple[int, int, str, bool]] = []

    def add(self, word: str) -> int:
        self.words.append(word)
        return len(self.words) - 1

    def noun_phrase(self, depth: int, role: str, p_rc: float, allow_pp: bool = True) -> NounPhrase:
        """role is "subject" or "object" (picks the pronoun case); depth = enclosing RCs."""
        rng, cfg = self.rng, self.cfg
        if role != "pp" and rng.random() < cfg.p_pronoun:
            pronouns = SUBJECT_PRONOUNS if role == "subject" else OBJECT_PRONOUNS
            word = rng.choice(sorted(pronouns))
            return NounPhrase(det=None, adjs=(), noun=self.add(word), number=pronouns[word])
        number = "pl" if rng.random() < cfg.p_plural else "sg"
        det = self.add(rng.choice(PLURAL_DETERMINERS if number == "pl" else SINGULAR_DETERMINERS))
        adjs: list[int] = []
        while len(adjs) < 2 and rng.random() < cfg.p_adj:
            adjs.append(self.add(rng.choice(ADJECTIVES)))
        sg, pl = rng.choice(NOUNS)
        noun = self.add(pl if number == "pl" else sg)
        # An NP takes a PP or an RC, never both: in "the dogs near the bird that sings" the RC
        # could attach to either noun, and the gold subject of "sings" would be ambiguous.
        # PP nouns take neither, for the same reason.
        want_rc = depth < cfg.max_depth and rng.random() < p_rc
        pp = rc = None
        if allow_pp and not want_rc and rng.random() < cfg.p_pp:
            pp = PrepPhrase(self.add(rng.choice(PREPOSITIONS)), self.noun_phrase(depth, "pp", 0.0, allow_pp=False))
        if want_rc:
            rc = self.rel_clause(depth + 1, noun, number)
        return NounPhrase(det=det, adjs=tuple(adjs), noun=noun, number=number, pp=pp, rc=rc)

    def rel_clause(self, depth: int, head: int, head_number: str) -> RelClause:
        rng, cfg = self.rng, self.cfg
        that = self.add(RELATIVIZER)
        if rng.random() < cfg.p_object_relative:
            # "the dog that the cats see": the inner NP is the verb's subject, the head is its gap object.
            subject = self.noun_phrase(depth, "subject", cfg.p_relative)
            sg, pl = rng.choice(TRANSITIVE_VERBS)
            verb = self.add(pl if subject.number == "pl" else sg)
            self.facts.append((verb, subject.noun, subject.number, True))
            return RelClause(that, subject, VerbPhrase(verb))
        # "the dog that sees the cats": the head noun is the verb's subject.
        return RelClause(that, None, self.verb_phrase(depth, head, head_number, in_rc=True))

    def verb_phrase(self, depth: int, subject: int, number: str, in_rc: bool) -> VerbPhrase:
        rng, cfg = self.rng, self.cfg
        r = rng.random()
        if r < cfg.p_copula:
            verb = self.add(COPULA[1] if number == "pl" else COPULA[0])
            self.facts.append((verb, subject, number, in_rc))
            return VerbPhrase(verb, adj=self.add(rng.choice(ADJECTIVES)))
        transitive = r < cfg.p_copula + cfg.p_transitive
        sg, pl = rng.choice(TRANSITIVE_VERBS if transitive else INTRANSITIVE_VERBS)
        verb = self.add(pl if number == "pl" else sg)
        self.facts.append((verb, subject, number, in_rc))
        if not transitive:
            return VerbPhrase(verb)
        # Object RCs are rarer in RCs than in the main clause to keep sentences short.
        p_rc = cfg.p_object_rc if not in_rc else cfg.p_object_rc / 2
        return VerbPhrase(verb, obj=self.noun_phrase(depth, "object", p_rc))


def generate_sentence(
    rng: random.Random,
    max_depth: int = 2,
    p_relative: float = 0.35,
    p_object_relative: float = 0.5,
    p_object_rc: float = 0.15,
    p_pp: float = 0.3,
    p_adj: float = 0.25,
    p_pronoun: float = 0.08,
    p_plural: float = 0.5,
    p_transitive: float = 0.5,
    p_copula: float = 0.15,
) -> Sentence:
    """Sample one sentence.

    max_depth bounds the nesting of relative clauses (2 allows "the dog that the cats that
    see him like runs"); p_relative is the chance that a subject NP gets a relative clause,
    p_object_rc the same for object NPs; p_object_relative picks object- over subject-relatives.
    """
    cfg = _Config(max_depth, p_relative, p_object_relative, p_object_rc, p_pp, p_adj, p_pronoun, p_plural, p_transitive, p_copula)
    b = _Builder(rng, cfg)
    subject = b.noun_phrase(0, "subject", p_relative)
    vp = b.verb_phrase(0, subject.noun, subject.number, in_rc=False)
    tree = Clause(subject, vp, b.add(PERIOD))
    words = ["an" if w == "a" and b.words[i + 1][0] in "aeiou" else w for i, w in enumerate(b.words)]
    numbers = [NOUN_NUMBER.get(w) for w in words]
    facts = []
    for verb, subj, number, in_rc in sorted(b.facts):
        lo, hi = sorted((subj, verb))
        attractors = sum(1 for k in range(lo + 1, hi) if numbers[k] not in (None, number))
        facts.append(VerbFact(verb, subj, number, attractors, in_rc))
    return Sentence(tuple(words), tuple(facts), tree)


def generate_corpus(n: int, seed: int, **kw) -> list[Sentence]:
    """n sentences, deterministic for a seed; kw goes to `generate_sentence`."""
    rng = random.Random(seed)
    return [generate_sentence(rng, **kw) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# Agreement tasks
# ---------------------------------------------------------------------------------------------


def with_flipped_verb(sentence: Sentence, verb_index: int) -> Sentence:
    """The same sentence with verbs[verb_index] wrongly inflected.

    The VerbFact is kept unchanged, so its `number` is still the subject's (= correct) number.
    """
    pos = sentence.verbs[verb_index].verb_pos
    words = list(sentence.words)
    words[pos] = flip_verb(words[pos])
    return Sentence(tuple(words), sentence.verbs, sentence.tree)


@dataclass(frozen=True)
class AgreementExample:
    """Grammaticality example: label 1 = all verbs agree, 0 = verbs[verb_index] is flipped."""

    sentence: Sentence
    label: int
    verb_index: int  # the flipped verb (label 0) or the verb the example was selected for (label 1)


def _has_intervening_clause(sentence: Sentence, fact: VerbFact) -> bool:
    lo, hi = sorted((fact.subject_pos, fact.verb_pos))
    return RELATIVIZER in sentence.words[lo + 1 : hi]


def _pick_hard_verb(rng: random.Random, want_attractor: bool, kw: dict) -> tuple[Sentence, int]:
    """Sample a sentence and a verb in it; with want_attractor, the verb must have an attractor.

    The main verb is preferred because its subject is furthest away; the same procedure is
    used for both labels so that sentence shape alone says nothing about the label.
    """
    for _ in range(10_000):
        s = generate_sentence(rng, **kw)
        main = s.main_verb_index
        if not want_attractor:
            return s, main
        candidates = [i for i, v in enumerate(s.verbs) if v.n_attractors > 0]
        if main in candidates:
            return s, main
        if candidates:
            return s, rng.choice(candidates)
    raise RuntimeError("could not sample a verb with an attractor; raise p_pp or p_relative")


def agreement_examples(n: int, seed: int, p_attractor: float = 0.6, **kw) -> list[AgreementExample]:
    """n grammaticality examples, exactly balanced (n // 2 or so of each label).

    With probability p_attractor the checked verb has >= 1 attractor between it and its
    subject, so the classifier really needs long-range agreement. kw goes to generate_sentence.
    """
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    rng.shuffle(labels)
    examples = []
    for label in labels:
        sentence, idx = _pick_hard_verb(rng, rng.random() < p_attractor, kw)
        if label == 0:
            sentence = with_flipped_verb(sentence, idx)
        examples.append(AgreementExample(sentence, label, idx))
    return examples


@dataclass(frozen=True)
class AgreementProbe:
    """Linzen et al. (2016) probe: after `prefix`, does the model prefer `correct` over `wrong`?"""

    prefix: tuple[str, ...]  # the words before the verb
    subject_pos: int
    correct: str
    wrong: str
    n_attractors: int
    number: str  # the subject's number


def agreement_probes(n: int, seed: int, p_hard: float = 0.9, **kw) -> list[AgreementProbe]:
    """n main-verb agreement probes, deterministic for a seed.

    With probability p_hard the main verb is separated from its subject by an attractor or a
    relative clause (otherwise the probe is trivially "look at the previous noun").
    """
    rng = random.Random(seed)
    probes = []
    while len(probes) < n:
        s = generate_sentence(rng, **kw)
        fact = s.verbs[s.main_verb_index]
        hard = fact.n_attractors > 0 or _has_intervening_clause(s, fact)
        if not hard and rng.random() < p_hard:
            continue
        word = s.words[fact.verb_pos]
        probes.append(
            AgreementProbe(
                s.words[: fact.verb_pos],
                fact.subject_pos,
                word,
                flip_verb(word),
                fact.n_attractors,
                fact.number,
            )
        )
    return probes
