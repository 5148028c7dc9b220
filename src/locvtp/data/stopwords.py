"""``objective.stopwords=english``: the words that may be discovered positives (docs/method.md, "Options").

The Collator marks each batch's content words (``content_mask``) with the run's tokenizer; the objective only
reads the mask. Re-exported from :mod:`locvtp.objectives` for compatibility.
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["ENGLISH_STOPWORDS", "content_words", "stopword_ids"]


# objective.stopwords=english: a fixed, small list of English function words (articles, pronouns, auxiliaries,
# prepositions, conjunctions) that have no visual counterpart. Masked from the *positives* only: they stay valid
# words everywhere else (negatives of other pairs, intra-pair negatives, the sentence encoder). Documented in
# docs/method.md ("Options"); changing it changes the ablation row, so keep it fixed.
ENGLISH_STOPWORDS: tuple[str, ...] = (
    "a", "an", "the", "and", "or", "but", "so", "then", "of", "to", "in", "on", "at", "for", "with", "from",
    "by", "into", "onto", "up", "out", "off", "over", "as", "is", "are", "was", "were", "be", "been", "it",
    "its", "this", "that", "these", "those", "there", "here", "i", "you", "he", "she", "we", "they", "me",
    "him", "her", "us", "them", "my", "your", "his", "our", "their", "some", "now", "just", "will", "can",
)


def stopword_ids(tokenizer: Any, words: tuple[str, ...] = ENGLISH_STOPWORDS) -> list[int]:
    """Token ids of the stop words that are whole tokens of ``tokenizer`` (sorted; words it splits or lacks are
    skipped: their pieces are not stop words). A whole word is what the tokenizer makes of the word alone
    (``tokenizer.word_token_id``): for WordPiece the vocabulary entry ``the``, for CLIP's BPE ``the</w>`` (its
    ``the`` is the start of ``theatre``); tokenizers without that method are asked ``token_to_id(str)``."""
    whole = getattr(tokenizer, "word_token_id", None) or tokenizer.token_to_id
    ids = {whole(w) for w in words}
    return sorted(int(i) for i in ids if i is not None)


def content_words(input_ids: torch.Tensor, word_mask: torch.Tensor, stop_ids: torch.Tensor | list[int]) -> torch.Tensor:
    """content_mask [B,L] = the valid words (``word_mask``) whose token id is not a stop-word id."""
    stop = torch.as_tensor(stop_ids, dtype=input_ids.dtype, device=input_ids.device)
    return word_mask.bool() & ~torch.isin(input_ids, stop)
