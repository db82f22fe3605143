"""Tasks: problems, prompts, answer extraction, canonical answers and verifiers."""

from __future__ import annotations

from collections.abc import Sequence


def countdown_prompt(numbers: Sequence[int], target: int) -> str:
    """The compact countdown prompt the embedded char-level base model is trained on.

    `countdown_prompt([3, 5, 7, 2], 24) == "3 5 7 2=24:"`; the completion is the bare
    expression (e.g. `(3+5)*(7-2)`) followed by EOS.
    """
    return f"{' '.join(str(x) for x in numbers)}={target}:"
