"""The spending cap `max_cost_usd`: one run's estimate against it before it starts, its recorded spend while it runs."""
from __future__ import annotations


def over_estimate(settings, estimate: float, what: str = "run") -> str | None:
    """Why a run or batch estimated at `estimate` USD may not start, or None."""
    cap = settings.max_cost_usd
    if cap is None or estimate <= cap:
        return None
    return (f"the {what}'s estimated cost ${estimate:.4f} exceeds max_cost_usd (${cap:g}); nothing was sent. Raise "
            "max_cost_usd, or build fewer plugins at a time")


def plan_line(settings, estimate: float) -> str:
    """What `doit plan` says about the cap."""
    cap = settings.max_cost_usd
    if cap is None:
        return "spending cap: none (set max_cost_usd to stop a run at a cost)"
    verdict = "within it" if estimate <= cap else "over it: the run would not start"
    return f"spending cap: ${cap:g} per run (max_cost_usd); this estimate ${estimate:.4f} is {verdict}"


def run_refusal(settings, market) -> str | None:
    """Before an online build run: its plan's estimate against the cap (remote providers only)."""
    if settings.max_cost_usd is None or settings.provider == "offline":
        return None
    from skillbuild import build, planning

    plan = planning.make_plan(settings, market, build.expected_provenance(settings), settings.model_id)
    return over_estimate(settings, plan.cost)


def stop_reason(settings, run_id: str) -> str | None:
    """While an online run goes: why it sends nothing more (its recorded spend reached the cap), or None."""
    cap = settings.max_cost_usd
    if cap is None or settings.provider == "offline":
        return None
    from skillbuild import build

    spent = build.open_audit(settings).run_spend(run_id, settings.price_input_per_mtok,
                                                 settings.price_output_per_mtok)
    if spent < cap:
        return None
    return (f"not sent: this run's recorded spend ${spent:.4f} reached max_cost_usd (${cap:g}); the plugin stays "
            "stale until the next run")
