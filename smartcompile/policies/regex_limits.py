"""Static limits that keep "re:" layer rules from hanging the compile.

Python's `re` backtracks and has no timeout, so a rule such as `(a+)+$` takes minutes on a
40-character layer name. Instead of timing the match, a pattern is refused when its shape allows
more than polynomial backtracking, or a polynomial of high degree:

1. at most MAX_REGEX_LENGTH characters (after "re:");
2. a group repeated more than once (by `*`, `+`, `{m,}`, `{m,n}` or `{n}` with n > 1) contains
   no quantifier and no `|`: `(a+)+`, `(a*)*`, `(a|aa)+`, `(\\.\\d+)*` are refused;
   `(ab)+`, `[ab]+`, `(\\.\\d)*` and `(\\.\\d+)?` are fine;
3. at most MAX_REGEX_QUANTIFIERS quantifiers (`*`, `+`, `?`, `{..}`; a lazy or possessive
   suffix does not count again), and at most MAX_REGEX_CHOICES quantifiers and `|` together.
   Each is a backtracking choice point and their costs multiply: the slowest patterns these
   limits allow (`(.*)(.*)(.*)\\1\\2\\3(a|b)x`) take about 3 ms on a 70-character layer
   name and under 0.1 s on a 200-character one; a fourth quantifier makes that seconds.
   Globs (`blocks.*.attn`) need no such limit: fnmatch compiles them without nested backtracking.

Rules 2 and 3 read the pattern's text: a `*` inside a character class is a literal and is not
counted, a `?` right after `(` is group syntax. The scan over-counts at worst (a literal `{2}`
in a comment), which only makes it stricter.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Optional

MAX_REGEX_LENGTH = 256  # characters of a "re:" rule's pattern (after the prefix)
MAX_REGEX_QUANTIFIERS = 3
MAX_REGEX_CHOICES = 4
_BRACE_QUANTIFIER = re.compile(r"\{(\d*)(,?)(\d*)\}")


@dataclasses.dataclass
class _Group:
    start: int
    has_choice: bool = False  # contains a quantifier or `|` (a backtracking choice point)


def _class_end(p: str, i: int) -> int:
    """Index just past the character class that starts at p[i] == '['."""
    j = i + 1
    if j < len(p) and p[j] == "^":
        j += 1
    if j < len(p) and p[j] == "]":  # a leading ']' is a literal
        j += 1
    while j < len(p) and p[j] != "]":
        j += 2 if p[j] == "\\" else 1
    return j + 1


def _quantifier(p: str, i: int) -> Optional[tuple[int, str, bool]]:
    """(index past it, its text, whether it repeats more than once) when a quantifier starts at
    p[i], else None."""
    if i >= len(p):
        return None
    if p[i] in "*+?":
        end, repeats = i + 1, p[i] != "?"
    else:
        m = _BRACE_QUANTIFIER.match(p, i)
        if m is None or not (m.group(1) or m.group(3)):  # "{}" and "{,}" are literals
            return None
        end = m.end()
        upper = m.group(3) if m.group(2) else m.group(1)  # "{m,n}" / "{m,}" / "{m}"
        repeats = upper == "" or int(upper) > 1
    if end < len(p) and p[end] in "?+":  # lazy / possessive modifier of the same quantifier
        end += 1
    return end, p[i:end], repeats


def regex_problem(pattern: str) -> Optional[str]:
    """None when `pattern` is within the limits above, else what breaks them."""
    if len(pattern) > MAX_REGEX_LENGTH:
        return f"pattern is {len(pattern)} characters long; at most {MAX_REGEX_LENGTH} are allowed"
    stack = [_Group(0)]
    quantifiers = alternations = 0
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
        elif c == "[":
            i = _class_end(pattern, i)
        elif c == "(":
            stack.append(_Group(i))
            i += 2 if pattern.startswith("?", i + 1) else 1  # "(?:", "(?=", ...: not a quantifier
        elif c == ")" and len(stack) > 1:
            group = stack.pop()
            i += 1
            q = _quantifier(pattern, i)
            if q is not None:
                if group.has_choice and q[2]:
                    return (f"group {pattern[group.start:i]!r} contains a quantifier or '|' and is itself "
                            f"repeated by {q[1]!r} (catastrophic backtracking); rewrite it without the nesting")
                quantifiers += 1
                i = q[0]
            stack[-1].has_choice |= group.has_choice or q is not None
        elif c == "|":
            alternations += 1
            stack[-1].has_choice = True
            i += 1
        else:
            q = _quantifier(pattern, i) if i > 0 else None
            if q is not None:
                quantifiers += 1
                stack[-1].has_choice = True
                i = q[0]
            else:
                i += 1
    if quantifiers > MAX_REGEX_QUANTIFIERS:
        return f"pattern has {quantifiers} quantifiers; at most {MAX_REGEX_QUANTIFIERS} are allowed"
    if quantifiers + alternations > MAX_REGEX_CHOICES:
        return (f"pattern has {quantifiers} quantifier(s) and {alternations} '|'; at most {MAX_REGEX_CHOICES} "
                "of them together are allowed")
    return None


def describe_limits() -> str:
    return (f"at most {MAX_REGEX_LENGTH} characters, at most {MAX_REGEX_QUANTIFIERS} quantifiers, at most "
            f"{MAX_REGEX_CHOICES} quantifiers and '|' together, and no group repeated more than once that "
            "contains a quantifier or '|'")
