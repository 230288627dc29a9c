"""coursekit.book: what the chapters use to put the run's numbers into the text (glue) and to
check the text's claims on every build (claim, in_seeds, the closing claims table)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from coursekit import book
from coursekit.book import Claim, claim, claims_table, in_seeds


def test_claim_passes_silently_when_the_run_supports_the_sentence():
    assert claim(True, "BN wins") is None
    assert claim(torch.tensor(True), "BN wins") is None


def test_claim_fails_naming_the_sentence_and_the_values():
    with pytest.raises(AssertionError) as failed:
        claim(0.61 > 0.62, "batch norm beats the plain network in every seed",
              bn=torch.tensor([0.5, 0.25]), plain=np.array([0.75]))
    message = str(failed.value)
    assert '"batch norm beats the plain network in every seed"' in message
    assert "bn=[0.5, 0.25]" in message and "plain=[0.75]" in message and "change the text" in message


def test_claim_wants_the_sentence():
    with pytest.raises(TypeError, match="non-empty str, got ''"):
        claim(True, "")


@pytest.mark.parametrize("flags, said", [([1, 1, 1], "in every seed"), ([True, True], "in both seeds"),
                                         ([1, 0, 1], "in 2 of 3 seeds"), ([0, 0, 0, 0, 0], "in no seed"),
                                         ([0, 0], "in neither seed"), ([1], "in the one seed"),
                                         (torch.tensor([True, False, False]), "in 1 of 3 seeds")])
def test_in_seeds_says_how_many_seeds_a_result_held_in(flags, said):
    assert in_seeds(flags) == said


def test_in_seeds_wants_one_flag_per_seed():
    with pytest.raises(ValueError, match="got none"):
        in_seeds([])


def test_claims_table_is_markdown_with_a_verdict_per_row():
    table = claims_table([Claim("BN trains faster", "14× fewer steps", "3.1× | here", True),
                          Claim("ICS explains it", "yes", "no", False),
                          Claim("smoother landscape", "yes", "in 2 of 3 seeds", "partly")]).data
    lines = table.splitlines()
    assert lines[0] == "| Claim | Paper | This run | Reproduced |" and lines[1] == "|---|---|---|---|"
    assert lines[2] == "| BN trains faster | 14× fewer steps | 3.1× \\| here | yes |"      # a | escaped
    assert lines[3].endswith("| no |") and lines[4].endswith("| partly |")


def test_claims_table_refuses_an_empty_table_and_other_rows():
    with pytest.raises(ValueError, match="at least one Claim"):
        claims_table([])
    with pytest.raises(TypeError, match="got tuple"):
        claims_table([("a", "b", "c", True)])


@pytest.mark.parametrize("value, number", [(torch.tensor(0.5), 0.5), (torch.tensor([3]), 3),
                                           (np.float64(0.25), 0.25), (np.int64(7), 7), (2, 2), ("in 2 of 3 seeds", "in 2 of 3 seeds")])
def test_glue_gives_the_text_python_numbers(monkeypatch, value, number):
    """{glue:text} formats the text of the glued value: ``tensor(0.5000)`` or
    ``np.float64(0.25)`` would not take ``:.2f``, and the build would fail."""
    import myst_nb
    from myst_nb.core.variables import format_plain_text

    glued = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, v, display=True: glued.update({name: (v, display)}))
    book.glue("acc", value)
    assert glued["acc"] == (number, False) and type(glued["acc"][0]) is type(number)
    if not isinstance(number, str):
        assert format_plain_text(repr(glued["acc"][0]), ".2f") == f"{number:.2f}"


@pytest.mark.parametrize("name", ["", "a-b", "two words", 3])
def test_glue_refuses_a_name_the_text_cannot_use(name):
    with pytest.raises(ValueError, match="letters, digits and '_'"):
        book.glue(name, 1.0)
