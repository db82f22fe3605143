"""Allow-list grammars checked before any scorer that parses or evaluates answer text.

Model output is untrusted: a scorer that hands text to Python's `eval` or sympy's `parse_expr` runs
it. So before such a scorer sees an answer, the answer must consist only of tokens a grammar lists:
numbers, operators, brackets and names from an explicit list - no attribute access, no dunders, no
string literals, no calls except to listed names. A single linear scan decides; nothing is parsed
by Python. Text that fails is NA with a reason (`REJECTED_BY_GRAMMAR`, `TOO_DEEP`, `TOO_LONG`).

- `TokenGrammar`: plain-text answers (reasoning-gym's sympy/eval scorers), configured per scorer
  family in `probe.scorer_audit`.
- `LatexGrammar`: the content of a math answer's `\\boxed{}` before math-verify (which parses LaTeX
  with sympy underneath): digits, operators, brackets, single-letter names, listed `\\commands`,
  with nesting and length bounded (math-verify falls back to an inner sub-expression of very deep
  input, so `\\frac{\\frac{...}{2}}{2}` nested 150 deep was judged equal to 1/2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

REJECTED_BY_GRAMMAR = "rejected_by_grammar"  # a character or token outside the allow-list
TOO_DEEP = "too_deep"  # brackets nested past the grammar's depth bound
TOO_LONG = "too_long"  # longer than the grammar's length bound

DIGITS = frozenset("0123456789")  # ASCII only: "٣".isdigit() is True, and Python reads it as 3
LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_IDENTIFIER_START = LETTERS | {"_"}
_IDENTIFIER = _IDENTIFIER_START | DIGITS
_OPENERS, _CLOSERS = "([{", ")]}"


class GrammarRejection(ValueError):
    """The answer is outside the grammar; `reason` is one of the module's reason constants."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class TokenGrammar:
    """Numbers, listed operators, listed brackets, blanks and listed names; nothing else.

    Names are maximal ASCII identifier runs (`[A-Za-z_][A-Za-z0-9_]*`), each of which must be in
    `names` or consist only of `name_alphabet` characters (string_insertion: runs of A-E). A number
    directly followed by a name is two tokens (`2x`), as Python's tokenizer sees it.
    """

    operators: tuple[str, ...] = ()  # matched longest first, e.g. ("**", "*", "+")
    names: frozenset[str] = frozenset()
    name_alphabet: frozenset[str] = frozenset()
    brackets: str = ""  # opening characters allowed, among "([{"; their closers come with them
    blanks: str = " \t"
    decimals: bool = False  # "2.5" (a "." only between digits: never attribute access)
    max_depth: int = 16
    max_chars: int = 2000

    def check(self, text: str) -> None:
        """Raise GrammarRejection unless every token of `text` is allowed. O(len(text))."""
        if len(text) > self.max_chars:
            raise GrammarRejection(TOO_LONG, f"longer than {self.max_chars} characters")
        operators = sorted(self.operators, key=len, reverse=True)
        closers = {_CLOSERS[_OPENERS.index(c)]: c for c in self.brackets}
        depth, position = 0, 0
        while position < len(text):
            char = text[position]
            if char in self.blanks:
                position += 1
            elif char in DIGITS:
                position = _skip(text, position, DIGITS)
                if self.decimals and text[position : position + 1] == "." and _at(text, position + 1, DIGITS):
                    position = _skip(text, position + 1, DIGITS)
            elif char in _IDENTIFIER_START:
                end = _skip(text, position, _IDENTIFIER)
                name = text[position:end]
                if name not in self.names and not (self.name_alphabet and set(name) <= self.name_alphabet):
                    raise GrammarRejection(REJECTED_BY_GRAMMAR, f"name {name[:40]!r} is not allowed")
                position = end
            elif char in self.brackets:
                depth += 1
                if depth > self.max_depth:
                    raise GrammarRejection(TOO_DEEP, f"brackets nested deeper than {self.max_depth}")
                position += 1
            elif char in closers:
                depth -= 1
                if depth < 0:
                    raise GrammarRejection(REJECTED_BY_GRAMMAR, f"unbalanced {char!r}")
                position += 1
            else:
                operator = next((op for op in operators if text.startswith(op, position)), None)
                if operator is None:
                    raise GrammarRejection(REJECTED_BY_GRAMMAR, f"character {char!r} is not allowed")
                position += len(operator)
        if depth:
            raise GrammarRejection(REJECTED_BY_GRAMMAR, "unbalanced brackets")


# --- LaTeX (math answers)

# The \commands a math answer may use (MATH-style final answers), each reviewed as harmless to a
# LaTeX-to-sympy parser; anything else (\input, \def, \catcode, ...) is refused.
LATEX_COMMANDS = frozenset(
    """
    frac dfrac tfrac cfrac sqrt binom dbinom tbinom cdot times div pm mp ast
    le leq ge geq lt gt ne neq approx equiv sim cong propto
    infty infinity circ degree prime angle triangle perp parallel
    left right big Big bigg Bigg bigl bigr Bigl Bigr
    text textbf textit textrm textnormal mathrm mathbf mathit mathbb mathcal mbox operatorname
    in notin ni cup cap setminus subset subseteq supset supseteq emptyset varnothing mid
    vert lvert rvert Vert lVert rVert langle rangle lfloor rfloor lceil rceil
    sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln lg exp
    lim sum prod int gcd lcm max min deg det mod bmod pmod
    overline bar hat vec tilde widehat dot ddot
    ldots cdots dots vdots ddots quad qquad displaystyle textstyle
    begin end hline
    to rightarrow Rightarrow leftarrow Leftarrow leftrightarrow iff implies
    land lor lnot neg wedge vee forall exists not
    alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi
    omicron pi varpi rho varrho sigma varsigma tau upsilon phi varphi chi psi omega
    Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega
    """.split()
)
LATEX_SYMBOL_ESCAPES = frozenset(",;:! {}%$&#_|\\")  # \, \; \! \{ \} \% \\ ...: spacing and literals
LATEX_OPERATORS = frozenset("+-*/^_=<>!,.:;|&%~")  # no quotes: a prime f'(x) is refused too


@dataclass(frozen=True)
class LatexGrammar:
    """The content of a `\\boxed{}`: single-letter names, listed \\commands, bounded nesting and length.

    Every letter outside a \\command is a name of its own (`xy` is x times y, as LaTeX reads it),
    so no multi-letter identifier can be spelled; "." is a decimal point or punctuation, never
    followed by a letter or "_" (no attribute access); "__" never occurs (no dunders); there are no
    quotes. Depth counts every bracket ( [ { \\{ and \\left( alike.
    """

    max_depth: int = 16
    max_chars: int = 2000
    commands: frozenset[str] = field(default=LATEX_COMMANDS)

    def check(self, text: str) -> None:
        """Raise GrammarRejection unless `text` is inside the grammar. O(len(text))."""
        if len(text) > self.max_chars:
            raise GrammarRejection(TOO_LONG, f"longer than {self.max_chars} characters")
        depth, position = 0, 0
        while position < len(text):
            char = text[position]
            if char == "\\":
                if _at(text, position + 1, LETTERS):
                    end = _skip(text, position + 1, LETTERS)
                    command = text[position + 1 : end]
                    if command not in self.commands:
                        raise GrammarRejection(REJECTED_BY_GRAMMAR, f"\\{command[:40]} is not allowed")
                    position = end
                    continue
                escaped = text[position + 1 : position + 2]
                if escaped not in LATEX_SYMBOL_ESCAPES:
                    raise GrammarRejection(REJECTED_BY_GRAMMAR, f"\\{escaped!r} is not allowed")
                if escaped in "{}":  # \{ \} are set braces: they nest like any bracket
                    depth += 1 if escaped == "{" else -1
                position += 2
            elif char in _OPENERS:
                depth += 1
                position += 1
            elif char in _CLOSERS:
                depth -= 1
                position += 1
            elif char in DIGITS or char in LETTERS or char.isspace() and char.isascii():
                position += 1
            elif char == "." and _at(text, position + 1, _IDENTIFIER_START):
                raise GrammarRejection(REJECTED_BY_GRAMMAR, "'.' followed by a name (attribute access)")
            elif char == "_" and text[position + 1 : position + 2] == "_":
                raise GrammarRejection(REJECTED_BY_GRAMMAR, "'__' is not allowed")
            elif char in LATEX_OPERATORS:
                position += 1
            else:
                raise GrammarRejection(REJECTED_BY_GRAMMAR, f"character {char!r} is not allowed")
            if depth > self.max_depth:
                raise GrammarRejection(TOO_DEEP, f"nested deeper than {self.max_depth}")


def _at(text: str, position: int, allowed: frozenset[str]) -> bool:
    return position < len(text) and text[position] in allowed


def _skip(text: str, position: int, allowed: frozenset[str]) -> int:
    while position < len(text) and text[position] in allowed:
        position += 1
    return position
