"""The run as a CI gate: which requested modes can run, and one verdict per mode.

A gate must not go green having tested nothing. So:
  - a requested proxy mode that cannot run on this machine stops the run before
    any cluster is made (exit EXIT_NOT_RUN, with the preflight's reason), unless
    the user passes --skip-unavailable-modes;
  - every mode ends as PASS (something passed, nothing failed), FAIL (something
    failed) or NOT RUN (nothing passed or failed: all skipped, or no tests);
    a NOT RUN mode makes the run exit EXIT_NOT_RUN unless the user allowed it.

The tally is fed from test reports (on the controller under xdist, which sees
every worker's reports); each report carries its mode as a user property.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# pytest's own: 0 passed, 1 tests failed, 2 interrupted, 3 internal error, 4 usage error,
# 5 no tests collected. Ours:
EXIT_NOT_RUN = 6
MODE_PROPERTY = "proxy_mode"


def unavailable_modes(modes: list[str], ipvs_engine: str = "auto", every_mode_in_guest: bool = False) -> dict[str, str]:
    """Mode -> why it cannot run on this machine, for each requested mode that cannot."""
    from . import engine
    out = {}
    for mode in modes:
        reason = engine.mode_unavailable_reason(mode, ipvs_engine, every_mode_in_guest)
        if reason:
            out[mode] = reason
    return out


def not_run_message(reasons: dict[str, str]) -> str:
    lines = [f"requested proxy mode(s) cannot run on this machine: {', '.join(reasons)}"]
    lines += [f"  {mode}: {why}" for mode, why in reasons.items()]
    lines.append("Drop the mode from --proxy-mode, or pass --skip-unavailable-modes to run the others "
                 "and report it as NOT RUN.")
    return "\n".join(lines)


@dataclass
class ModeTally:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    skip_reasons: Counter = field(default_factory=Counter)

    @property
    def verdict(self) -> str:
        if self.failed:
            return "FAIL"
        return "PASS" if self.passed else "NOT RUN"

    def counts(self) -> str:
        return f"{self.passed} passed, {self.failed} failed, {self.skipped} skipped"


@dataclass
class Gate:
    """Per-mode tally of one run. `requested` modes appear even when nothing of theirs ran."""
    requested: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)   # mode -> preflight reason
    modes: dict[str, ModeTally] = field(default_factory=dict)

    def tally(self, mode: str) -> ModeTally:
        return self.modes.setdefault(mode, ModeTally())

    def record(self, mode: str, when: str, outcome: str, skip_reason: str = "") -> None:
        """One pytest report: a test counts once for its call, or for a setup that skipped or
        failed; a failing teardown (an error) counts as a failure too."""
        t = self.tally(mode)
        if outcome == "failed":
            t.failed += 1
        elif outcome == "skipped" and when in ("setup", "call"):
            t.skipped += 1
            t.skip_reasons[skip_reason] += 1
        elif outcome == "passed" and when == "call":
            t.passed += 1

    def verdicts(self) -> dict[str, ModeTally]:
        """Empty when no test of a mode reported (a run of unit tests only: no gate to speak of)."""
        if not self.modes:
            return {}
        order = list(dict.fromkeys([*self.requested, *self.modes]))
        return {m: self.modes.get(m, ModeTally()) for m in order}

    def not_run(self) -> list[str]:
        return [m for m, t in self.verdicts().items() if t.verdict == "NOT RUN"]

    def lines(self) -> list[str]:
        """One line per mode, the last lines of the terminal summary and the report."""
        out = []
        for mode, t in self.verdicts().items():
            line = f"{mode}: {t.verdict} ({t.counts()})"
            if t.verdict == "NOT RUN":
                why = self.unavailable.get(mode) or _main_reason(t) or "no test of this mode was selected"
                line += f" -- {why}"
            out.append(line)
        return out

    def as_dict(self) -> dict:
        return {m: {"verdict": t.verdict, "passed": t.passed, "failed": t.failed, "skipped": t.skipped,
                    "reason": self.unavailable.get(m, "")} for m, t in self.verdicts().items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Gate":
        """A finished run's gate back from its as_dict() (report.json); skip reasons are not kept there."""
        return cls(requested=list(d),
                   unavailable={m: g["reason"] for m, g in d.items() if g.get("reason")},
                   modes={m: ModeTally(passed=g["passed"], failed=g["failed"], skipped=g["skipped"])
                          for m, g in d.items()})


def _main_reason(t: ModeTally) -> str:
    if not t.skip_reasons:
        return ""
    reason, n = t.skip_reasons.most_common(1)[0]
    return f"skipped: {reason}" + (f" (and {len(t.skip_reasons) - 1} other reasons)" if len(t.skip_reasons) > 1 else "")
