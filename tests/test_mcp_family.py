"""The generated family of ``benchmarks/mcp_quality.py``: seeded, solvable by the exact planner, split in two.

MCP's design is frozen on one half of the family and reported on the other, so the halves must not share a
workflow and must together be the whole family; and a rerun must draw the same family, or a number quoted
from one run cannot be checked against another.
"""

from __future__ import annotations

import runtime
from benchmarks.mcp_quality import Generator, cell_key, exact_value, family, family_row, family_spec, first_actions
from planners.exact import ExactPlanner


def test_the_generator_is_seeded() -> None:
    assert family_spec(7) == family_spec(7)
    assert family_spec(7)[0] != family_spec(8)[0]
    assert family(4) == family(4)


def test_every_cell_is_accepted_by_the_exact_planner() -> None:
    cells = family(24)
    assert len(cells) >= 200
    for cell in cells:
        table = runtime.ProfileTable.from_workflow(runtime.parse_workflow(cell.spec))
        ExactPlanner(table, cell.deadline)  # raises PlannerSpecError on what it cannot solve
        assert cell.budget > 0 and cell.deadline > 0


def test_the_splits_are_disjoint_and_cover_the_family() -> None:
    cells = family(24)
    design = {c.seed for c in cells if c.split == "design"}
    report = {c.seed for c in cells if c.split == "report"}
    assert design and report and not design & report
    assert design | report == {c.seed for c in cells}
    assert sum(c.split == "design" for c in cells) + sum(c.split == "report" for c in cells) == len(cells)


def test_a_fresh_draw_and_scaled_levels_are_other_cells_of_the_same_generator() -> None:
    """``--first-seed`` and ``--level-scale``: the checks of the verdict on workflows and limits no design choice
    saw draw other workflows, and move every limit by the factor asked (a budget never below its floor)."""
    base, fresh = family(2), family(2, first_seed=24)
    assert {c.seed for c in fresh} == {24, 25}
    assert not {str(c.spec) for c in base} & {str(c.spec) for c in fresh}
    tight = family(2, scale=(0.8, 0.9))
    for b, t in zip(base, tight, strict=True):
        assert (t.seed, t.budget_level, t.deadline_level) == (b.seed, b.budget_level, b.deadline_level)
        assert abs(t.deadline - 0.9 * b.deadline) <= 0.01  # both rounded to the hundredth
        assert 0.8 * b.budget - 1e-6 <= t.budget <= b.budget


def test_the_generators_ranges_draw_other_workflows_under_other_cache_keys() -> None:
    """``--price-ratios`` and ``--skill-shift``: the sensitivity to the generator's own ranges. The default
    draws the family of the issue (its cached optima stay valid); another range moves prices or success rates
    as asked and nothing else, and keys its cells apart in a shared cache of optima."""
    assert family(3, gen=Generator()) == family(3)
    assert all(not c.generator and cell_key(c).count("|") == 2 for c in family(3))
    dear = family(12, first_seed=96, gen=Generator((50.0, 200.0)))
    assert all(50 <= c.price_ratio <= 200 for c in dear)
    (harder, shape, ratio), (base, base_shape, base_ratio) = (
        family_spec(96, Generator(skill_shift=-0.15)),
        family_spec(96),
    )
    assert (shape, ratio, harder["models"]) == (base_shape, base_ratio, base["models"])
    for hs, bs in zip(harder["subtasks"], base["subtasks"], strict=True):
        for name, prof in hs["profiles"].items():
            assert prof["p"] <= bs["profiles"][name]["p"]
    assert any(
        ph["profiles"]["m0"]["p"] < pb["profiles"]["m0"]["p"]
        for ph, pb in zip(harder["subtasks"], base["subtasks"], strict=True)
    )
    assert not {cell_key(c) for c in family(2)} & {cell_key(c) for c in family(2, gen=Generator(skill_shift=-0.15))}


def test_a_family_row_measures_the_variant_asked_for() -> None:
    """``--planner``: the row's MCP columns come from that spec (its first decision there too), so a variant is
    compared with the optimum on the same cells and draws as the default."""
    cell = family(1)[4]
    v = exact_value(runtime.parse_workflow(cell.spec), cell.budget, cell.deadline)
    row = family_row(cell, v, 60, "mcp:n=8")
    wf = runtime.parse_workflow(cell.spec)
    assert row["mcp_first"] == first_actions(wf, cell.budget, cell.deadline, "mcp:n=8")[1]
    assert row["mcp"] == round(runtime.predict(wf, cell.budget, cell.deadline, planner="mcp:n=8", runs=60,
                                               workers=1).p_success, 4)  # fmt: skip
    assert row["exact"] == round(v, 4) and row["runs"] == 60
