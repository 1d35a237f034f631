"""The GPT-Eval prompt and the parsing of its replies, apart from the client that sends it.

The paper's two turns word for word (`TURN1_INTRO`, `TURN1_QUESTION`, `TURN2`), our Instruct extension
(`TURN1_INSTRUCTIONS`, `TURN2_INSTRUCTIONS`) and the format reminder, as text (`turn1_text`, ...) and as
chat messages (`turn1_messages`, ...). `parse_grade` reads a grading reply, free text or JSON, into
scores out of 10 and an age group A-F (`parse_age_group`), telling the scale hints and the echoed age
options of the question apart from the judge's answer, and reading past a reasoning model's `<think>` block
(`llm.client.strip_reasoning`, the one the story checks use: grades inside it are drafts). Pure functions of strings, so the prompt and the
parser are tested without an endpoint; `evals.judge` runs the conversation. Bump `PROMPT_VERSION` when
the prompt text changes: it keys the judge's cache.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

from tinystories_lib.evals.grades import AGE_GROUPS, LLM_DIMENSIONS, Completion
from tinystories_lib.llm.client import strip_reasoning

PROMPT_VERSION = "gpt-eval-v1"
INSTRUCTION_DIMENSION = "instruction_following"

TURN1_INTRO = (
    "the following exercise, the student is given a beginning of a story. The student needs to complete "
    "it into a full story. The exercise tests the student's language abilities and creativity. The symbol "
    "*** marks the separator between the prescribed beginning and the student's completion:"
)
TURN1_QUESTION = (
    "Please provide your general assessment about the part written by the student (the one after the *** "
    "symbol). Is it gramatically correct? Is it consistent with the beginning of the story? Pay special "
    "attention to whether the student manages to complete the sentence which is split in the middle by "
    "the separator ***."
)
TURN2 = (
    "Now, grade the student's completion in terms of grammar, creativity, consistency with the story's "
    "beginning and whether the plot makes sense. Moreover, please provide your best guess of what the age "
    "of the student might be, as reflected from the completion. Choose from possible age groups: A: 3 or "
    "under. B: 4-5. C: 6-7. D: 8-9. E: 10-12. F: 13-16."
)
# Instruct extension (ours, see module docstring).
TURN1_INSTRUCTIONS = "The student was also given the following instructions for the story:\n{instructions}"
TURN2_INSTRUCTIONS = (
    " Also grade the instruction following: how well the completion follows the instructions the student "
    "was given."
)
_DIMENSION_LABELS = {
    "grammar": "Grammar",
    "creativity": "Creativity",
    "consistency": "Consistency",
    "plot": "Plot",
    INSTRUCTION_DIMENSION: "Instruction following",
}

Instructions = Union[Mapping[str, str], Callable[[Completion], "str | None"], None]


# ------------------------------------------------------------------------------------ prompts


def turn1_text(beginning: str, completion: str, instructions: str | None = None) -> str:
    parts = [TURN1_INTRO, f"{beginning}***{completion}"]
    if instructions:
        parts.append(TURN1_INSTRUCTIONS.format(instructions=instructions))
    parts.append(TURN1_QUESTION)
    return "\n\n".join(parts)


def turn2_text(instructions: str | None = None) -> str:
    return TURN2 + (TURN2_INSTRUCTIONS if instructions else "")


def reminder_text(dimensions: Sequence[str]) -> str:
    lines = [f"{_DIMENSION_LABELS.get(d, d)}: <score>/10" for d in dimensions]
    return (
        "I could not read your grades. Please answer again in exactly this format, one item per line:\n"
        + "\n".join(lines)
        + "\nAge group: <one letter from A to F>"
    )


def turn1_messages(c: Completion, instructions: str | None = None) -> list[dict]:
    return [{"role": "user", "content": turn1_text(c.beginning, c.completion, instructions)}]


def turn2_messages(turn1: list[dict], assessment: str, instructions: str | None = None) -> list[dict]:
    return turn1 + [{"role": "assistant", "content": assessment}, {"role": "user", "content": turn2_text(instructions)}]


def reminder_messages(turn2: list[dict], grading_reply: str, dimensions: Sequence[str]) -> list[dict]:
    return turn2 + [
        {"role": "assistant", "content": grading_reply},
        {"role": "user", "content": reminder_text(dimensions)},
    ]


# ------------------------------------------------------------------------------------ parsing

_DIMENSION_PATTERNS = {
    "grammar": r"gramm?ar|gramm?atical(?:ity|ly)?",
    "creativity": r"creativity|creative(?:ness)?",
    "consistency": r"consistency|consistent",
    "plot": r"plot",
    INSTRUCTION_DIMENSION: r"instructions?[\s_-]*following|following (?:the )?instructions|instructions?",
}
_NUMBER = r"(\d+(?:\.\d+)?)(?:\s*(?:/|out of)\s*(\d+))?"
# Scale hints such as "(1-10)" or "(out of 10)" would otherwise be read as the score.
_SCALE_HINT = re.compile(r"\(\s*(?:out of\s*\d+|\d+\s*(?:-|–|to)\s*\d+)\s*\)", re.IGNORECASE)
_AGE_RANGES = {
    "A": r"(?<!\d)3\s*(?:years?\s*)?(?:or|and)\s*(?:under|younger|less|below)|under\s*(?:the age of\s*)?4(?!\d)",
    "B": r"(?<!\d)4\s*(?:-|–|—|to)\s*5(?!\d)",
    "C": r"(?<!\d)6\s*(?:-|–|—|to)\s*7(?!\d)",
    "D": r"(?<!\d)8\s*(?:-|–|—|to)\s*9(?!\d)",
    "E": r"(?<!\d)10\s*(?:-|–|—|to)\s*12(?!\d)",
    "F": r"(?<!\d)13\s*(?:-|–|—|to)\s*16(?!\d)",
}
_ANY_RANGE = "|".join(f"(?P<{k}>{v})" for k, v in _AGE_RANGES.items())
_LETTER = r"(?<![A-Za-z'’])([A-F])(?![A-Za-z'’])"
_AGE_MENTION = re.compile(r"\bage(?:\s*group)?s?\b", re.IGNORECASE)
# The question's own list of options, when a judge echoes it: three or more "X: range" pairs in a row.
_ECHOED_OPTIONS = re.compile(
    rf"(?:{_LETTER}\s*[:.)]\s*\(?(?:{'|'.join(_AGE_RANGES.values())})\)?[\s.,;]*){{3,}}", re.IGNORECASE
)


@dataclass
class ParsedGrade:
    scores: dict[str, float] = field(default_factory=dict)
    age_group: str | None = None
    missing: list[str] = field(default_factory=list)


def _score(value: str, denominator: str | None) -> float | None:
    v = float(value)
    if denominator and float(denominator) not in (0.0, 10.0):
        v = v * 10 / float(denominator)  # "4/5" style answers, put on the paper's 10-point scale
    return v if 0 <= v <= 10 else None


def _find_score(text: str, pattern: str) -> float | None:
    """The score after a dimension's name: first where the name opens a line (a short prefix such as
    "1. **" or "whether the" allowed), else anywhere."""
    line_start = rf"(?im)^[^\n]{{0,30}}?\b(?:{pattern})\b[^\d\n]{{0,60}}?{_NUMBER}"
    anywhere = rf"(?i)\b(?:{pattern})\b[^\d\n]{{0,60}}?{_NUMBER}"
    for regex in (line_start, anywhere):
        for m in re.finditer(regex, text):
            s = _score(m.group(1), m.group(2))
            if s is not None:
                return s
    return None


def _range_letter(text: str) -> str | None:
    m = re.search(_ANY_RANGE, text, re.IGNORECASE)
    return m.lastgroup if m else None


def parse_age_group(text: str) -> str | None:
    """The age-group letter in a reply: "Age group: B", "B: 4-5", "(C)", "age: 6-7"..."""
    text = _ECHOED_OPTIONS.sub(" ", text.replace("*", ""))
    # 1. Right after a mention of "age", latest first: the answer usually closes the reply, and an
    #    echoed list of options ("age groups: A: 3 or under...") comes before it.
    for m in reversed(list(_AGE_MENTION.finditer(text))):
        window = text[m.end() : m.end() + 40].split("\n")[0]
        letter = re.search(_LETTER, window)
        if letter:
            return letter.group(1)
        if (by_range := _range_letter(window)) is not None:
            return by_range
    # 2. A letter with its own range ("C: 6-7"), 3. a parenthesised letter ("(C)"): the last one.
    pairs = [
        m.group(1)
        for m in re.finditer(rf"{_LETTER}\s*[:.)\]-]?\s*\(?\s*({_ANY_RANGE})", text)
        if _range_letter(m.group(2)) == m.group(1)
    ]
    if pairs:
        return pairs[-1]
    parens = re.findall(r"\(([A-F])\)", text)
    if parens:
        return parens[-1]
    # 4. A range said as an age ("10 to 12 years old"); a bare range could count anything.
    aged = [_range_letter(m.group(1)) for m in re.finditer(rf"({_ANY_RANGE})[\s-]*years?\b", text, re.IGNORECASE)]
    return aged[-1] if aged else None


def _json_block(text: str) -> dict | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _parse_json(obj: dict, dimensions: Sequence[str]) -> ParsedGrade:
    out = ParsedGrade()
    for key, value in obj.items():
        k = re.sub(r"[^a-z]+", " ", str(key).lower()).strip()
        if isinstance(value, dict):  # {"grammar": {"score": 8, ...}}
            value = value.get("score", value.get("grade", ""))
        if re.fullmatch(r"(student )?age( group)?( guess)?", k):
            out.age_group = parse_age_group(f"age: {value}")
            continue
        for d in dimensions:
            if d not in out.scores and re.search(rf"\b(?:{_DIMENSION_PATTERNS[d]})\b", k):
                m = re.search(_NUMBER, str(value))
                s = _score(m.group(1), m.group(2)) if m else None
                if s is not None:
                    out.scores[d] = s
                break
    return out


def parse_grade(text: str, dimensions: Sequence[str] = LLM_DIMENSIONS) -> ParsedGrade:
    """Scores out of 10 and the age-group letter from a judge's reply (JSON or free text), its reasoning
    block left out. `missing` lists what could not be found ("age_group" included)."""
    text = strip_reasoning(text)
    obj = _json_block(text)
    parsed = _parse_json(obj, dimensions) if obj is not None else ParsedGrade()
    plain = _SCALE_HINT.sub(" ", text).replace("*", "").replace("#", "")
    for d in dimensions:
        if d not in parsed.scores and (s := _find_score(plain, _DIMENSION_PATTERNS[d])) is not None:
            parsed.scores[d] = s
    if parsed.age_group is None:
        parsed.age_group = parse_age_group(text)
    parsed.missing = [d for d in dimensions if d not in parsed.scores]
    if parsed.age_group not in AGE_GROUPS:
        parsed.age_group = None
        parsed.missing.append("age_group")
    return parsed
