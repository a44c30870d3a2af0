"""Text scorers of the BayesFlow paper's data sets (Section 6.1): what a workflow's output string is worth.

Each scorer takes the output and the gold answer and returns a score in [0, 1]; none raises on any string.

- GSM8K, solve rate (:func:`gsm8k_score`): the last number of the output against the gold, as numbers
  (thousands separators dropped), within :data:`NUMERIC_TOLERANCE`; AFlow's evaluator does the same.
- MATH, solve rate (:func:`math_score`): the answer is the last ``\\boxed{...}`` (nested braces; ``\\fbox`` too),
  else the text after the last ``Answer:``, else the last line. Both sides are normalized the way the MATH
  benchmark's own evaluator (Hendrycks et al. 2021, ``strip_string``) does: no ``\\left``/``\\right``, spaces,
  ``\\!``, ``$``, degrees, percent signs, trailing units in ``\\text{...}``; ``dfrac``/``tfrac`` to ``frac``,
  ``\\frac12`` to ``\\frac{1}{2}``, ``a/b`` to ``\\frac{a}{b}``, ``\\sqrt2`` to ``\\sqrt{2}``, a short ``x =`` prefix
  dropped; ``\\text{...}`` is unwrapped. AFlow compares with sympy where the strings differ; sympy is not a
  dependency of ontime, so instead two answers that both read as rational numbers (integers, decimals,
  ``\\frac{a}{b}``, ``a/b``, a leading minus, thousands separators) are compared as exact fractions: "0.5" equals
  ``\\frac{1}{2}`` and "5,\\!460" equals "5460". Symbolic equivalences beyond that (``2\\sqrt{2}`` vs
  ``\\sqrt{8}``) count as different: a lower bound on the sympy evaluator's score.
- DROP and HotpotQA, token F1 (:func:`f1_score`): SQuAD normalization (lower case, no punctuation, no articles),
  the answer is the text after the output's last ``Answer:`` (else the whole output); DROP's gold may list
  several answers joined by ``|`` and the output may too: the best pair counts, as in AFlow's evaluator.
- MMLU-Pro, accuracy (:func:`choice_score`): the last ``Answer: X`` (X in A-J, brackets allowed), else the last
  "answer is (X)", else the last standalone capital letter A-J; unparseable scores 0.
- MBPP and HumanEval pass@1 run code in the sandbox (:mod:`tools.workflowgen`); :func:`extract_code` picks
  the code out of an output.
"""

from __future__ import annotations

import re
from fractions import Fraction

from runtime.types.answers import f1

__all__ = [
    "MAX_ANSWER",
    "NUMERIC_TOLERANCE",
    "answer_line",
    "choice_score",
    "extract_choice",
    "extract_code",
    "extract_math_answer",
    "f1_score",
    "gsm8k_score",
    "last_boxed",
    "last_number",
    "math_equal",
    "math_score",
    "normalize_math",
]

NUMERIC_TOLERANCE = 1e-6  # AFlow's GSM8K evaluator: abs(prediction - gold) <= 1e-6

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?|-?\.\d+")
_ANSWER = re.compile(r"answer\s*(?:is)?\s*:\s*(.*)", re.IGNORECASE)
_CHOICE_LINE = re.compile(r"answer\s*:\s*\**\s*\(?([A-J])\b\)?")
_CHOICE_PHRASE = re.compile(r"answer is\s*:?\s*\**\s*\(?([A-J])\b\)?", re.IGNORECASE)
_LETTER = re.compile(r"(?<![A-Za-z])([A-J])(?![A-Za-z])")
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)
MAX_ANSWER = 2_000
_MAX_TEXT = 200_000  # outputs are cut to this many characters first: a scorer's regexes stay linear and cheap


def last_number(text: str) -> float | None:
    """The last number in ``text`` (thousands separators dropped), or None."""
    found = _NUMBER.findall(text[-_MAX_TEXT:].replace(",", ""))
    for token in reversed(found):
        try:
            return float(token)
        except ValueError:  # pragma: no cover - the pattern only matches numbers
            continue
    return None


def gsm8k_score(output: str, gold: str) -> float:
    """1.0 if the output's last number equals the gold number, else 0.0."""
    want, got = last_number(gold), last_number(output)
    if want is None or got is None:
        return 0.0
    return float(abs(got - want) <= NUMERIC_TOLERANCE)


def last_boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; None if there is none or
    it is not closed (as the MATH evaluator's ``last_boxed_only_string`` reads it)."""
    text = text[-_MAX_TEXT:]
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    if text.startswith("\\boxed ", start):  # "\boxed 5": the token after the space
        rest = text[start:].split(None, 2)
        return rest[1].rstrip("$.") if len(rest) >= 2 else None
    brace = text.find("{", start)
    if brace < 0 or text[start:brace] not in ("\\boxed", "\\fbox"):
        return None
    depth = 0
    for k in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        if depth == 0:
            return text[brace + 1 : k]
    return None


def answer_line(text: str) -> str | None:
    """What follows the last ``Answer:`` (or "answer is:") on its line, stripped; None if there is none."""
    found = _ANSWER.findall(text[-_MAX_TEXT:])
    return found[-1].strip() if found else None


def extract_math_answer(text: str) -> str:
    """The final answer of a MATH solution: the last box, else the last ``Answer:``, else the last line."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    line = answer_line(text)
    if line is not None:
        return re.sub(r"^[\s$]+|[\s$.]+$", "", line)
    lines = [x for x in text[-_MAX_TEXT:].splitlines() if x.strip()]
    return lines[-1].strip() if lines else ""


def _braced(s: str, i: int) -> tuple[str, int] | None:
    """The group at ``s[i]``: ``{...}`` with balanced braces, or one character; and where it ends."""
    if i >= len(s):
        return None
    if s[i] != "{":
        return s[i], i + 1
    depth = 0
    for k in range(i, len(s)):
        depth += {"{": 1, "}": -1}.get(s[k], 0)
        if depth == 0:
            return s[i + 1 : k], k + 1
    return None


def _fix_fracs(s: str) -> str:
    r"""``\frac12`` and ``\frac1{2}`` to ``\frac{1}{2}``: both arguments braced."""
    out, i = [], 0
    while (j := s.find("\\frac", i)) >= 0:
        out.append(s[i : j + 5])
        a = _braced(s, j + 5)
        b = _braced(s, a[1]) if a else None
        if a is None or b is None:
            i = j + 5
            continue
        out.append(f"{{{a[0]}}}{{{b[0]}}}")
        i = b[1]
    out.append(s[i:])
    return "".join(out)


def _unwrap_text(s: str) -> str:
    r"""``\text{abc}`` (and ``\textbf``, ``\mbox``) to ``abc``."""
    return re.sub(r"\\(?:text(?:bf|rm|it)?|mbox|mathrm|mathbf)\s*\{([^{}]*)\}", r"\1", s)


def normalize_math(answer: str) -> str:
    """A MATH answer in the MATH evaluator's canonical string form (see the module docstring); an answer longer
    than :data:`MAX_ANSWER` characters is cut there first (no MATH answer comes near it)."""
    s = re.sub(r"(?<!\\)\\[ ,;]", "", answer[:MAX_ANSWER])  # LaTeX spaces "\ ", "\,", "\;" (not a row break "\\")
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "").replace("$", "")
    s = re.sub(r"\\text\{\s*[a-zA-Z ]*\}\s*$", "", s) if not re.fullmatch(r"\s*\\text\{.*\}\s*", s) else s
    s = _unwrap_text(s)
    s = s.replace("\\%", "").replace("%", "").replace(" .", " 0.").replace("{.", "{0.")
    s = s.strip()
    if s.startswith("."):
        s = "0" + s
    parts = s.split("=")
    if len(parts) == 2 and len(parts[0].strip()) <= 2:  # "x = 5", "k=3"
        s = parts[1]
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    if m:
        s = f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    return s.rstrip(".")


def _rational(s: str) -> Fraction | None:
    """``s`` (normalized) as an exact rational number, if it is one."""
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):  # thousands separators, as in "5,\!460"
        s = s.replace(",", "")
    sign = 1
    if s.startswith("-"):
        sign, s = -1, s[1:]
    m = re.fullmatch(r"\\frac\{(\d+(?:\.\d+)?)\}\{(\d+(?:\.\d+)?)\}", s) or re.fullmatch(r"(\d+)/(\d+)", s)
    try:
        if m:
            den = Fraction(m.group(2))
            return None if den == 0 else sign * Fraction(m.group(1)) / den
        if re.fullmatch(r"\d+(?:\.\d+)?|\.\d+", s):
            return sign * Fraction(s)
    except (ValueError, ZeroDivisionError):  # pragma: no cover - the patterns admit only valid numbers
        return None
    return None


def math_equal(prediction: str, gold: str) -> bool:
    """Whether two MATH answers are the same: equal normalized strings, or equal rational numbers."""
    p, g = normalize_math(prediction), normalize_math(gold)
    if p == g:
        return bool(p)
    a, b = _rational(p), _rational(g)
    return a is not None and a == b


def math_score(output: str, gold: str) -> float:
    """1.0 if the output's final answer equals the gold answer (``gold``: the boxed answer), else 0.0."""
    return float(math_equal(extract_math_answer(output), gold))


def f1_score(output: str, gold: str) -> float:
    """Token F1 of the output's answer against the gold (several golds joined by ``|``: the best)."""
    answer = answer_line(output)
    text = answer if answer is not None else output[-_MAX_TEXT:]
    golds = [g for g in gold.split("|") if g.strip()]
    parts = [p for p in text.split("|") if p.strip()] or [text]
    return max((f1(p, golds) for p in parts), default=0.0) if golds else 0.0


def extract_choice(output: str) -> str | None:
    """The letter a multiple-choice output chose (see the module docstring), or None."""
    text = output[-_MAX_TEXT:]
    for pattern in (_CHOICE_LINE, _CHOICE_PHRASE, _LETTER):
        found = pattern.findall(text)
        if found:
            return str(found[-1]).upper()
    return None


def choice_score(output: str, gold: str) -> float:
    """1.0 if the output chose the gold letter, else 0.0."""
    return float(extract_choice(output) == gold.strip().upper())


def extract_code(output: str, entry_point: str | None = None) -> str:
    """The code in an output: the last fenced block that defines ``entry_point`` (else the last Python or
    untagged block, else the last block), or the whole output when it has no fenced block."""
    blocks: list[tuple[str, str]] = _FENCE.findall(output[-_MAX_TEXT:])
    if not blocks:
        return output
    if entry_point:
        defining = [code for _, code in blocks if re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", code)]
        if defining:
            return defining[-1]
    python = [code for lang, code in blocks if lang.lower() in ("", "python", "py", "python3")]
    return (python or [code for _, code in blocks])[-1]
