"""Fault-injection suite: real Redis servers of its own (restarted, flushed, starved of memory,
stopped, behind a broken network), real worker processes. Each scenario records what happened
to every frame it sent; the table is printed at the end of the run."""

from __future__ import annotations

import pytest

from tests.chaos.line import ChaosLine, Figures

FIGURES: list[Figures] = []


@pytest.fixture
def chaos(tmp_path, served_model):
    """A factory of `ChaosLine`s for this test; every one is stopped afterwards."""
    made: list[ChaosLine] = []

    def make(**kw) -> ChaosLine:
        line = ChaosLine(tmp_path / f"line{len(made)}", served_model, **kw)
        made.append(line)
        return line

    yield make
    for line in made:
        line.stop()


@pytest.fixture
def record():
    """`record(figures)`: keep a scenario's ledger for the summary table, and check it."""
    def keep(fig: Figures, allow_lost: int = 0) -> Figures:
        FIGURES.append(fig)
        assert fig.twice == 0, f"{fig.scenario}: {fig.twice} frames got two results"
        assert fig.lost <= allow_lost, f"{fig.scenario}: {fig.lost} frames lost"
        return fig
    return keep


def pytest_terminal_summary(terminalreporter) -> None:
    if not FIGURES:
        return
    tr = terminalreporter
    tr.section("fault injection: what happened to every frame sent")
    tr.write_line(f"{'scenario':<34}{'sent':>6}{'scored':>8}{'dead':>6}{'lost':>6}"
                  f"{'twice':>7}  dead-letter reasons / note")
    for f in FIGURES:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(f.reasons.items()))
        tr.write_line(f"{f.scenario:<34}{f.sent:>6}{f.scored:>8}{f.dead:>6}{f.lost:>6}"
                      f"{f.twice:>7}  {'; '.join(x for x in (reasons, f.note) if x)}")
