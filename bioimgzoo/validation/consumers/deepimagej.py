"""DeepImageJ 3.x (JDLL 0.6.1): rules ``D1``-``D29`` of consumer-rules.md and the zoo CI's run, simulated.

Fiji and Java cannot run here: the verdict is predicted from the description,
the files (ONNX graph, TorchScript archive, test tensors) and
``deepimagej.simulation``, which runs the zoo CI's DeepImageJ test in numpy
around our runtime's engine: halos removed, JDLL's tile size, ``symmetric``
padding, JDLL's processing quirks, compared with the test output at
``|dij - expected| <= 1.5e-4 + 1e-4 |expected|`` (a failure there is rule D27's).

The module also keeps the interface of the former ``bioimgzoo.validation.deepimagej``
(:func:`check_deepimagej`, :class:`RuleResult`, :func:`format_results`, ...),
with rules numbered 1-29 as D1-D29.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator, Sequence

from ..._text import markdown_safe, terminal_safe
from .._registry import FAILED, NOT_APPLICABLE, PASSED, SKIPPED, Finding, Status, roll_up
from . import _jdll
from ._base import NeedsFiles, Subject, evaluate, open_subject, tool

__all__ = ["TOOL", "RuleResult", "RULES", "FIXES", "check_deepimagej", "format_results", "has_failures",
           "rule_results", "simulate"]


def render_markdown(findings: Sequence[Finding]) -> list[str]:
    """A consumer family's Markdown section: rule, title, status, detail and fix per finding."""
    from .._registry import family

    if not findings:
        return ["Nothing to check."]
    fam = family(findings[0].family)
    titles = {c.id: c.title for c in fam.checks} if fam is not None else {}
    lines = ["| rule | what | status | detail | fix |", "|---|---|---|---|---|"]
    for f in findings:
        lines.append(f"| {f.details.get('rule', f.check)} | {markdown_safe(titles.get(f.check, ''), table_cell=True)}"
                     f" | {f.status} | {markdown_safe(f.message, table_cell=True)} | "
                     f"{markdown_safe(f.fix, table_cell=True)} |")
    return lines


TOOL = tool("deepimagej", "DeepImageJ (JDLL) rules", order=50, render_markdown=render_markdown)

for _r in _jdll.rules_for("deepimagej"):  # registered by @jdll_rule beside each check
    TOOL.rule(_r.id, title=_r.title, fix=_r.fix)(_r.check)


def load_file(s: Subject, ref: str | None, what: str):
    import numpy as np

    return s.once(f"npy:{ref}", lambda: np.load(s.file(ref, what), allow_pickle=False))


def engine_for(s: Subject, formats: Sequence[str]) -> tuple[str, Any]:
    """The first of ``formats`` the package has, loaded by our runtime (cached on the subject)."""
    from ...runtime.engines import create_engine

    fmt = next((f for f in formats if f in s.view.weights), None)
    if fmt is None:
        raise NeedsFiles(f"no {' / '.join(formats)} weights to run")
    if s.descr is None:
        raise NeedsFiles("bioimageio.spec cannot read the description, so the network is not run")
    if s.static:
        raise NeedsFiles("static check: the network is not run")
    if s.refused:
        raise NeedsFiles(f"the package's files are not read ({s.refused})")
    try:
        if s.engines is not None:  # the validation run's own load of this format (shared with its checks)
            engine = s.once(f"engine:{fmt}", lambda: s.engines(fmt))
        else:
            engine = s.once(f"engine:{fmt}", lambda: create_engine(s.pkg, fmt, device="cpu", trust_code=False,
                                                                     n_outputs=len(s.descr.outputs)))
    except Exception as e:
        raise NeedsFiles(f"the {fmt} weights do not load here ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    return fmt, engine


def simulate(s: Subject) -> Iterator[tuple]:
    """The zoo CI's DeepImageJ test of the package, simulated (see the module docstring)."""
    from ._simulate import ATOL, RTOL, deepimagej_prediction, zoo_ci_mismatch

    v = s.view
    if len(v.inputs) != 1 or len(v.outputs) != 1:
        yield NOT_APPLICABLE, f"{len(v.inputs)} inputs / {len(v.outputs)} outputs: the CI does not get this far (D5)"
        return
    t_in, t_out = v.inputs[0], v.outputs[0]
    bad_ops = [p.id for t in (t_in, t_out) for p in t.procs if p.id not in _jdll.OPS and p.id != "ensure_dtype"]
    if bad_ops:
        yield NOT_APPLICABLE, f"JDLL throws on {bad_ops} before predicting (D20)"
        return
    x = load_file(s, t_in.test, f"test tensor of {t_in.id!r}")
    expected = load_file(s, t_out.test, f"test tensor of {t_out.id!r}")
    fmt, engine = engine_for(s, ("torchscript", "onnx"))
    if x.ndim != len(t_in.axes):
        yield SKIPPED, f"the test input has {x.ndim} dims for {len(t_in.axes)} axes (D26)"
        return
    tiles = [_jdll.jdll_tile(a, n, 0.0) if a.type == "space" else n for a, n in zip(t_in.axes, x.shape)]
    aligned = [a.id for a in t_out.axes] == [a.id for a in t_in.axes] and all(
        a.kind == "ref" and a.ref_tensor == t_in.id and a.scale == 1 and not a.offset
        for a in t_out.axes if a.type == "space")
    if tuple(tiles) != x.shape and not aligned:
        yield SKIPPED, f"JDLL would tile the test input {x.shape} as {tiles}, and the output axes do not map " \
                       "1:1 onto the input's: not simulated"
        return
    if any(tl <= 0 for tl in tiles):
        yield FAILED, f"JDLL's tile {tiles} for the test input {list(x.shape)} is empty (D18)"
        return

    def run(tile):
        import numpy as np

        return np.asarray(engine.run([tile])[0])

    try:
        pred = deepimagej_prediction(x, t_in, t_out, tiles, run, v05=v.v05)
    except Exception as e:
        yield FAILED, f"the network fails on JDLL's tile {tiles} ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        return
    m = zoo_ci_mismatch(pred, expected)
    details = {"weights_format": fmt, "tiles": tiles, **m}
    if m["shape_mismatch"]:
        yield FAILED, f"DeepImageJ's output has the shape {m['actual_shape']}, the test output " \
                      f"{m['expected_shape']}", details
    elif m["mismatched"]:
        yield FAILED, f"{m['mismatched']} of {m['total']} pixels of the simulated DeepImageJ output ({fmt}, tiles " \
                      f"{tiles}) differ from the test output by more than {ATOL:g} + {RTOL:g}|expected| " \
                      f"(max {m['max_abs']:.3g})", details
    else:
        yield PASSED, f"the simulated DeepImageJ output ({fmt}, tiles {tiles}) matches the test output within " \
                      f"{ATOL:g} + {RTOL:g}|expected| (max {m['max_abs']:.3g})", details


TOOL.rule("D27", name="simulation", title="zoo CI run, simulated",
          fix="Make DeepImageJ's prediction match the test output: use JDLL's processing (D22-D25), a test input "
              "that is one tile (D28) and Java-runnable weights that reproduce it.")(simulate)


# ---------------------------------------------------------------------------- the former interface


@dataclass(frozen=True)
class RuleResult:
    """The outcome of one rule (``rule`` is N of ``DN``; ``status`` one of the status vocabulary)."""

    rule: int
    name: str
    status: Status
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


#: rule number -> short name
RULES: dict[int, str] = {0: _jdll.D0_TITLE, **{int(r.id[1:]): r.title for r in _jdll.rules_for("deepimagej")}}
#: rule number -> how to fix a failure of it
FIXES: dict[int, str] = {0: _jdll.D0_FIX, **{int(r.id[1:]): r.fix for r in _jdll.rules_for("deepimagej")}}


def _fold(findings: Iterable[Finding]) -> list[RuleResult]:
    """One :class:`RuleResult` per rule D1-D29 present in ``findings`` (the simulation counts as D27)."""
    by_rule: dict[int, list[Finding]] = {}
    for f in findings:
        rule = f.details.get("rule")
        if f.family == TOOL.name and isinstance(rule, str) and rule[1:].isdigit():
            by_rule.setdefault(int(rule[1:]), []).append(f)
    out = []
    for n in sorted(by_rule):
        fs = by_rule[n]
        status = roll_up(f.status for f in fs)
        shown = [f.message for f in fs if f.status == status] or [fs[0].message]
        out.append(RuleResult(n, RULES[n], status, "; ".join(shown)))
    return out


def check_deepimagej(source: Any, *, static: bool = False, **hub_options: Any) -> list[RuleResult]:
    """Check a package against DeepImageJ's rules: exactly one :class:`RuleResult` per rule 1..29, in order.

    Parameters
    ----------
    source : Package or anything :func:`bioimgzoo.package.open_package` accepts
    static : bool
        Judge the description alone (rules needing files are ``skipped``).
    **hub_options
        Passed to :func:`~bioimgzoo.package.open_package` for URLs and ids.
    """
    return _fold(evaluate(TOOL, open_subject(source, static=static, **hub_options)))


def rule_results(findings: Iterable[Finding]) -> list[RuleResult]:
    """The :class:`RuleResult` of each DeepImageJ rule that ran, from :func:`check_package` findings."""
    return _fold(findings)


def has_failures(results: Sequence[RuleResult]) -> bool:
    """Whether any rule failed (DeepImageJ will not run the package)."""
    return any(r.status == FAILED for r in results)


def format_results(results: Sequence[RuleResult], *, markdown: bool = False) -> str:
    """A plain-text (or Markdown) table of the results."""
    if markdown:
        lines = ["| # | rule | status | detail |", "|---|---|---|---|"]
        for r in results:  # messages quote the package's own text: no raw HTML into the report
            lines.append(f"| D{r.rule} | {r.name} | {r.status} | {markdown_safe(r.message, table_cell=True)} |")
        return "\n".join(lines)
    width = max((len(r.name) for r in results), default=10)
    sw = max((len(r.status) for r in results), default=6)
    return "\n".join(f"D{r.rule:<3} {r.name:<{width}}  {r.status:<{sw}}  "
                     f"{terminal_safe(r.message, single_line=True)}" for r in results)

