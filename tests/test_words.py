"""The word layer (stories.words): what a word, a sentence end and a word's inflections are, on hand-made
cases with known answers."""

from __future__ import annotations

import pytest

from tinystories_lib.stories.words import (
    SENTENCE_END,
    base_word,
    capitalised,
    find_word,
    sentences,
    split_words,
    stem,
    uses_phrase,
    uses_word,
    word_forms,
    word_spans,
    words,
)

# --- words and marks -----------------------------------------------------------------------------


def test_split_words_keeps_marks_as_tokens_of_their_own():
    assert split_words('"Hi!" said Tom. Bye...') == ['"', "hi", "!", '"', "said", "tom", ".", "bye", ".", ".", "."]
    assert split_words("Tom's ball, Lily’s kite", lower=False) == ["Tom's", "ball", ",", "Lily's", "kite"]
    assert split_words("3 cats") == ["3", "cats"]


def test_words_are_letters_with_inner_apostrophes():
    assert words("Don't go, Tom’s dog!") == ["don't", "go", "tom's", "dog"]
    assert words("Don't go", lower=False) == ["Don't", "go"]
    assert words("'Hello,' she said.") == ["hello", "she", "said"]  # quotes are not part of a word
    assert words("a band-aid") == ["a", "band", "aid"]
    assert words("snake_case") == ["snake", "case"]
    assert words("") == []


def test_words_with_digits():
    assert words("He had 3 cats and R2D2.") == ["he", "had", "cats", "and", "r", "d"]
    assert words("He had 3 cats and R2D2.", digits=True) == ["he", "had", "3", "cats", "and", "r2d2"]


def test_word_spans_point_into_the_text_as_written():
    text = "Lily’s cat, Tom's hat"
    spans = word_spans(text, lower=False)
    assert [w for _, _, w in spans] == ["Lily's", "cat", "Tom's", "hat"]
    assert [text[a:b] for a, b, _ in spans] == ["Lily’s", "cat", "Tom's", "hat"]  # its own apostrophe
    assert [w for _, _, w in word_spans(text)] == words(text)


def test_base_word_drops_the_possessive_only():
    assert base_word("Tom's") == "Tom" and base_word("tom's") == "tom"
    assert base_word("don't") == "don't" and base_word("it's") == "it" and base_word("bus") == "bus"


def test_capitalised():
    assert capitalised("Tom") and capitalised("McGee") and capitalised("Émile")
    assert not capitalised("tom") and not capitalised("TOM") and not capitalised("I") and not capitalised("")
    assert not capitalised("3D")


# --- finding a word ------------------------------------------------------------------------------


def test_find_word_whole_words_and_possessives():
    text = "Tom had a kite. Tom's kite was red. Tomato soup."
    spans = find_word(text, "Tom")
    assert [text[a:b] for a, b in spans] == ["Tom", "Tom"] and spans[1][0] == text.index("Tom's")
    assert find_word("Tom’s hat", "Tom") == [(0, 3)]  # a curly possessive too
    assert find_word("Bent sticks.", "Ben") == [] and find_word("Tom2 ran.", "Tom") == []
    assert find_word("I don't know.", "don") == []  # part of a contraction is not a word


def test_find_word_case_rule():
    assert [s for s, _ in find_word("Kite flying. The kite. A KITE.", "kite")] == [0, 17, 25]
    assert find_word("She saw a red rose.", "Rose") == []  # a name only as written
    assert find_word("Rose saw a rose.", "Rose") == [(0, 4)]


def test_find_word_phrases():
    text = "He had a toy car. A toy, car. Toy  cars."
    assert find_word(text, "toy car") == [(9, 16)]  # only spaces between the words; no plural
    assert find_word(text, "") == []


# --- sentences -----------------------------------------------------------------------------------


def test_sentences_end_with_their_closing_quote():
    text = 'Tom said, "Hi!" Lily smiled. Was it fun? It was “great.” The end'
    assert sentences(text) == ['Tom said, "Hi!"', "Lily smiled.", "Was it fun?", "It was “great.”", "The end"]
    assert sentences("She ate 3.5 apples. Then she slept.") == ["She ate 3.5 apples.", "Then she slept."]
    assert sentences("") == [] and sentences("  ") == []


def test_sentence_end_needs_a_space_or_the_end_after_it():
    assert [m.group() for m in SENTENCE_END.finditer("Hi. Ok!' No?\" Yes.")] == [".", "!'", '?"', "."]
    assert SENTENCE_END.search("www.example") is None


# --- inflections ---------------------------------------------------------------------------------


def test_stem_meets_inflections():
    assert len({stem(w) for w in ("like", "likes", "liked", "liking")}) == 1
    assert stem("planned") == stem("plans") and stem("puppies") == stem("puppy")
    assert stem("Tom's") == stem("tom") and stem("bus") == "bus"


@pytest.mark.parametrize("word, forms", [
    ("jump", {"jumps", "jumped", "jumping"}),
    ("dance", {"dances", "danced", "dancing"}),
    ("cry", {"cries", "cried"}),
    ("stop", {"stopped", "stopping"}),
    ("happy", {"happier", "happiest", "happily"}),
    ("box", {"boxes"}),
    ("leaf", {"leaves"}),
    ("picnic", {"picnicking"}),
    ("run", {"ran", "running", "runs"}),  # irregular
    ("go", {"went", "gone", "goes"}),
    ("mouse", {"mice"}),
    ("child", {"children"}),
    ("good", {"better", "best"}),
])
def test_word_forms_regular_and_irregular(word, forms):
    assert {word} | forms <= word_forms(word)
    assert word_forms(word.upper()) == word_forms(word)


def test_uses_word_in_any_form():
    toks = words("The mice ran home and the puppies were happier.")
    assert uses_word(toks, "mouse") and uses_word(toks, "run") and uses_word(toks, "puppy")
    assert uses_word(set(toks), "Happy") and not uses_word(toks, "cat")


def test_uses_phrase_in_order_and_whole_words():
    assert uses_phrase(words("We ate ice cream."), "ice cream")
    assert uses_phrase(words("Two ice creams!"), "Ice Cream")  # the last word in any form
    assert not uses_phrase(words("The cream was ice cold."), "ice cream")  # out of order
    assert not uses_phrase(words("nice creamy soup"), "ice cream")  # parts of other words
    assert not uses_phrase(words("We ate ice cream."), "")
