"""`dasr bench large-batch`'s analysis and report: both views side by side, seeds' spread, recipes, goals.

:func:`analyse` turns the finished runs (their per-epoch dev WERs) into a JSON-able results dict;
:func:`render` writes the Markdown sections and the figure from that dict alone, so
:func:`lab.report.rerender` can rebuild the report without training.

- Equal epochs (the paper's protocol): every run's dev WER after E epochs, E being the epochs
  the m = 1 runs took to plateau (the most any of them took).
- Own plateau: every run's dev WER at the epoch its plateau was reached, and that epoch.

A multiplier's value is the mean over its seeds; its spread is (largest - smallest) / mean.
"""

from __future__ import annotations

from dasr.train.plateau import PLATEAU_EVALS, PLATEAU_REL, plateau_epochs
from lab.report import Report, new_figure

TITLE = "Large batches: dev WER against the global batch, every run trained to its plateau"
WER_GOAL = 0.02
VIEWS = ("equal", "plateau")
VIEW_NAMES = {"equal": "equal epochs", "plateau": "own plateau"}


def _wers(run: dict) -> list[float]:
    return [e["dev_wer"] for e in run["evals"]]


def base_plateau_epochs(runs: list[dict]) -> int | None:
    """E: the most epochs any finished m = 1 run took to plateau, its cap where one never did (None before one ran)."""
    found = [
        plateau_epochs(_wers(r)) or (r["max_epochs"] if len(r["evals"]) >= r["max_epochs"] else None)
        for r in runs
        if r["m"] == 1
    ]
    return max((e for e in found if e is not None), default=None)


def describe(run: dict, base_epochs: int | None) -> dict:
    """One run's row: its epochs, plateau (or cap), and dev WER and updates in both views."""
    wers = _wers(run)
    reached = plateau_epochs(wers)
    at_equal = base_epochs is not None and len(wers) >= base_epochs
    return {
        **{k: run[k] for k in ("id", "strategy", "m", "recipe", "seed", "peak_lr", "warmup_epochs", "wall_s")},
        "epochs": len(wers),
        "plateau_epochs": reached,
        "capped": reached is None and len(wers) >= run["max_epochs"],
        "dev_wer_plateau": wers[reached - 1] if reached else None,
        "updates_plateau": run["evals"][reached - 1]["step"] if reached else None,
        "dev_wer_equal": wers[base_epochs - 1] if at_equal else None,
        "updates_equal": run["evals"][base_epochs - 1]["step"] if at_equal else None,
        "dev_wer_curve": wers,
    }


def stats(values: list[float]) -> dict | None:
    """n, mean and the relative spread (largest - smallest) / mean (None for one value); None for no values."""
    if not values:
        return None
    mean = sum(values) / len(values)
    spread = (max(values) - min(values)) / mean if len(values) > 1 else None
    return {"n": len(values), "mean": mean, "spread_rel": spread, "values": values}


def group(rows: list[dict], recipe: str) -> dict:
    """Per strategy and multiplier (as a string), the seeds' stats of both views with ``recipe``."""
    out: dict = {}
    for r in rows:
        if r["recipe"] == recipe:
            out.setdefault(r["strategy"], {}).setdefault(str(r["m"]), []).append(r)
    return {
        s: {
            m: {
                **{v: stats([r[f"dev_wer_{v}"] for r in mine if r[f"dev_wer_{v}"] is not None]) for v in VIEWS},
                "plateau_epochs": stats([r["plateau_epochs"] for r in mine if r["plateau_epochs"] is not None]),
            }
            for m, mine in sorted(by_m.items(), key=lambda kv: int(kv[0]))
        }
        for s, by_m in out.items()
    }


def relative(groups: dict, view: str) -> dict:
    """Per strategy and multiplier: its mean's relative dev WER difference to m = 1's in ``view`` (None unmeasured)."""
    out: dict = {}
    for s, by_m in groups.items():
        base = by_m.get("1", {}).get(view)
        out[s] = {
            m: None if g[view] is None or base is None else g[view]["mean"] / base["mean"] - 1 for m, g in by_m.items()
        }
    return out


def tolerated(rel: dict[str, float | None], goal: float = WER_GOAL) -> int | None:
    """The largest m such that the means of every measured m' <= m lie within ``goal`` of m = 1's."""
    if rel.get("1") is None:
        return None
    best = 1
    for m in sorted(int(k) for k, v in rel.items() if v is not None):
        if rel[str(m)] > goal:  # type: ignore[operator]
            break
        best = m
    return best


def verdict(base: dict | None, large: dict | None, goal: float = WER_GOAL) -> str:
    """Whether ``large``'s mean is within ``goal`` of ``base``'s, where the seeds' spread can tell.

    met: within the goal, and neither spread exceeds it; missed: beyond the goal by more than the
    larger spread (or beyond it with both spreads within it); otherwise unresolved. With one seed
    on either side the verdict is provisional.
    """
    if base is None or large is None:
        return "not measured"
    diff = large["mean"] / base["mean"] - 1
    spreads = [g["spread_rel"] for g in (base, large) if g["spread_rel"] is not None]
    noise = max(spreads, default=0.0)
    if diff <= goal and noise <= goal:
        call = "met"
    elif diff > goal and (noise <= goal or diff > goal + noise):
        call = "**missed**"
    else:
        call = f"unresolved (seed spread {100 * noise:.1f} % exceeds the goal)"
    return call if len(spreads) == 2 else f"{call}, provisional: {min(base['n'], large['n'])} seed(s)"


def analyse(runs: list[dict], setup: dict, pending: list[str]) -> dict:
    """The results dict of the finished ``runs``: rows, both views per strategy and m, recipes, goals' numbers."""
    base_epochs = base_plateau_epochs(runs)
    rows = sorted(
        (describe(r, base_epochs) for r in runs),
        key=lambda r: (r["recipe"] != setup["default_recipe"], r["m"], r["strategy"], r["seed"]),
    )
    groups = group(rows, setup["default_recipe"])
    rel = {v: relative(groups, v) for v in VIEWS}
    top = str(setup["top"])
    largest_ok = {s: tolerated(rel["equal"].get(s, {})) for s in ("sync", "adpsgd")}
    largest_ok_plateau = {s: tolerated(rel["plateau"].get(s, {})) for s in ("sync", "adpsgd")}
    spreads = [
        g[v]["spread_rel"]
        for by_m in groups.values()
        for m, g in by_m.items()
        for v in ("equal",)
        if m in ("1", top) and g[v] is not None and g[v]["spread_rel"] is not None
    ]
    recipes = _recipes(rows, groups, setup)
    verdicts = {
        s: {v: verdict(groups.get(s, {}).get("1", {}).get(v), groups.get(s, {}).get(top, {}).get(v)) for v in VIEWS}
        for s in ("sync", "adpsgd")
    }
    return {
        "setup": setup,
        "base_plateau_epochs": base_epochs,
        "runs": rows,
        "groups": groups,
        "rel_diff_vs_m1": rel,
        "largest_ok_multiplier": largest_ok,
        "largest_ok_multiplier_own_plateau": largest_ok_plateau,
        "goal_verdicts_at_top": verdicts,
        "seed_spread_rel": max(spreads, default=None),
        "recipes_at_top": recipes,
        "best_recipe_at_top": best_recipe(recipes),
        "pending_runs": pending,
    }


def _recipes(rows: list[dict], groups: dict, setup: dict) -> list[dict]:
    """Each recipe's sync runs at the top m (mean over their seeds), against sync m = 1's mean in both views."""
    base = groups.get("sync", {}).get("1", {})
    top = str(setup["top"])
    out = []
    for name in (setup["default_recipe"], *setup["rivals"]):
        mine = group(rows, name).get("sync", {}).get(top)
        if mine is None:
            out.append({"recipe": name, "measured": False})
            continue
        rel = {
            f"rel_{v}": None if mine[v] is None or base.get(v) is None else mine[v]["mean"] / base[v]["mean"] - 1
            for v in VIEWS
        }
        peak = next(r["peak_lr"] for r in rows if r["recipe"] == name and str(r["m"]) == top)
        out.append({"recipe": name, "measured": True, **mine, **rel, "peak_lr": peak})
    return out


def best_recipe(recipes: list[dict]) -> str | None:
    """The recipe with the lowest mean dev WER at equal epochs among those measured there."""
    measured = [r for r in recipes if r["measured"] and r["equal"] is not None]
    return min(measured, key=lambda r: r["equal"]["mean"])["recipe"] if measured else None


def summary_figures(results: dict) -> dict:
    """The headline figures for ``summary.json``, from the equal-epoch view of the plateau runs."""
    top = str(results["setup"]["top"])
    rel = results["rel_diff_vs_m1"]["equal"]
    sync = results["groups"].get("sync", {})
    top_run = next(
        (
            r
            for r in results["runs"]
            if (r["strategy"], str(r["m"]), r["recipe"], r["seed"])
            == ("sync", top, results["setup"]["default_recipe"], 0)
        ),
        None,
    )
    base = sync.get("1", {}).get("equal")
    return {
        "large_batch_10x_warmup_wer_rel_diff": rel.get("sync", {}).get(top),
        "large_batch_10x_warmup_wer_rel_diff_adpsgd": rel.get("adpsgd", {}).get(top),
        "large_batch_10x_updates": None if top_run is None else top_run["updates_equal"],
        "large_batch_base_dev_wer": None if base is None else base["mean"],
        "large_batch_largest_ok_multiplier_sync": results["largest_ok_multiplier"]["sync"],
        "large_batch_largest_ok_multiplier_adpsgd": results["largest_ok_multiplier"]["adpsgd"],
        "large_batch_base_plateau_epochs": results["base_plateau_epochs"],
        "large_batch_seed_spread_rel": results["seed_spread_rel"],
    }


def _pct(value: float | None, signed: bool = False) -> str:
    return "–" if value is None else f"{100 * value:{'+' if signed else ''}.1f} %"


def _mean_spread(g: dict | None) -> str:
    if g is None:
        return "–"
    spread = (
        "" if g["spread_rel"] is None else f" ± {100 * g['spread_rel'] / 2:.1f} % (range {100 * g['spread_rel']:.1f} %)"
    )
    return f"{100 * g['mean']:.1f} %{spread}, n = {g['n']}"


def render(results: dict, report: Report):
    """Setup, runs, both views, recipes, goals and what is pending; the figure."""
    report.sections.clear()
    _setup(results, report)
    _runs(results, report)
    _views(results, report)
    _recipe_table(results, report)
    _goals(results, report)
    return _figure(results)


PLATEAU_RULE = f"the last {PLATEAU_EVALS} evaluations within {100 * PLATEAU_REL:.0f} % relative"


def _setup(results: dict, report: Report) -> None:
    s = results["setup"]
    recipes = "; ".join(f"`{name}`: {r['title']}, LR {r['lr']} at B" for name, r in s["recipes"].items())
    report.add(
        "Setup",
        f"Corpus: {s['corpus']}. `{s['model']}` model (2 x 64 BLSTM) on N = {s['nproc']} workers, one torch thread "
        f"each ({s['nproc']} workers shared {report.machine['cores']} cores with other engineers' jobs); B = "
        f"{s['nproc']} x {s['base_frames_per_worker']} padded frames (about one utterance per worker), m x B for m = "
        f"{', '.join(map(str, s['multipliers']))}. Greedy dev WER after every epoch (the test set is not used); a run "
        f"stops at its plateau ({PLATEAU_RULE}) once it has also trained the E epochs m = 1 took (E = "
        f"{results['base_plateau_epochs'] or 'not known yet'}: the most any m = 1 run took), or at the cap of "
        f"{s['max_epochs']} epochs (not plateaued). The schedule: peak LR scaled from B by the optimizer's rule "
        f"(linear for SGD, square root for AdamW and LAMB), warm-up of {s['warmup_epochs_at_B']} x m epochs (LEGW: "
        f"the same updates at every m) unless the recipe says otherwise, then x 1/sqrt(2) per epoch from epoch "
        f"{s['anneal_start_epoch']}. Seeds {', '.join(map(str, s['seeds']))} at every m (m = 1 and m = {s['top']} "
        f"first). Recipes: {recipes}; the rivals run sync at m = {s['top']}, seed 0, and "
        f"{', '.join(s['seeded_rivals']) or 'none'} with every seed. The LRs at B were set before the runs, not tuned "
        "(see `dasr/bench/large_batch.py`); the last two rivals were added after the first five had run.",
    )


def _runs(results: dict, report: Report) -> None:
    rows = (
        "| run | m | strategy | recipe | seed | peak LR | epochs to plateau | updates at plateau (per worker) | "
        "dev WER at plateau | updates at E | dev WER at E (equal epochs) | dev WER per epoch, % |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    for r in results["runs"]:
        reached = r["plateau_epochs"] or (f"none in {r['epochs']} (cap)" if r["capped"] else "–")
        curve = ", ".join(f"{100 * w:.1f}" for w in r["dev_wer_curve"])
        rows += (
            f"| {r['id']} | {r['m']} | {r['strategy']} | {r['recipe']} | {r['seed']} | {r['peak_lr']:.4f} | {reached} | "
            f"{r['updates_plateau'] or '–'} | {_pct(r['dev_wer_plateau'])} | {r['updates_equal'] or '–'} | "
            f"{_pct(r['dev_wer_equal'])} | {curve} |\n"
        )
    if results["pending_runs"]:
        rows += f"\nPending (not run yet, or failed: see the log): {', '.join(results['pending_runs'])}.\n"
    report.add("Runs", rows)


def _views(results: dict, report: Report) -> None:
    rel = results["rel_diff_vs_m1"]
    rows = (
        f"| strategy | m | equal epochs (E = {results['base_plateau_epochs'] or '–'}): dev WER mean ± half range | vs m = 1 | "
        "own plateau: dev WER mean ± half range | vs m = 1 | epochs to plateau (mean) |\n|---|---|---|---|---|---|---|\n"
    )
    for s, by_m in sorted(results["groups"].items(), reverse=True):
        for m, g in by_m.items():
            epochs = "–" if g["plateau_epochs"] is None else f"{g['plateau_epochs']['mean']:.1f}"
            rows += (
                f"| {s} | {m} | {_mean_spread(g['equal'])} | {_pct(rel['equal'][s][m], True)} | "
                f"{_mean_spread(g['plateau'])} | {_pct(rel['plateau'][s][m], True)} | {epochs} |\n"
            )
    report.add("Both views, default recipe", rows)


def _recipe_table(results: dict, report: Report) -> None:
    rows = (
        f"| recipe (sync, m = {results['setup']['top']}) | peak LR | dev WER at E: mean ± half range | vs sync m = 1 | "
        "epochs to plateau (mean) | dev WER at plateau | vs sync m = 1 at plateau |\n|---|---|---|---|---|---|---|\n"
    )
    for r in results["recipes_at_top"]:
        title = results["setup"]["recipes"][r["recipe"]]["title"]
        if not r["measured"]:
            rows += f"| {title} | – | pending | | | | |\n"
            continue
        epochs = "–" if r["plateau_epochs"] is None else f"{r['plateau_epochs']['mean']:.1f}"
        rows += (
            f"| {title} | {r['peak_lr']:.4f} | {_mean_spread(r['equal'])} | {_pct(r['rel_equal'], True)} | "
            f"{epochs} | {_mean_spread(r['plateau'])} | {_pct(r['rel_plateau'], True)} |\n"
        )
    best = results["best_recipe_at_top"]
    if best is not None:
        rows += f"\nLowest mean dev WER at E: {results['setup']['recipes'][best]['title']}.\n"
    report.add("The recipe and its rivals", rows)


def _goals(results: dict, report: Report) -> None:
    top = str(results["setup"]["top"])
    v, rel, ok = results["goal_verdicts_at_top"], results["rel_diff_vs_m1"], results["largest_ok_multiplier"]
    lines = [
        f"- m = {top} within {100 * WER_GOAL:.0f} % relative dev WER of m = 1 at equal epochs (means; met only where "
        "the seeds' range is within the goal too): "
        + "; ".join(f"{s} {_pct(rel['equal'].get(s, {}).get(top), True)} ({v[s]['equal']})" for s in ("sync", "adpsgd"))
        + ". At their own plateaus: "
        + "; ".join(
            f"{s} {_pct(rel['plateau'].get(s, {}).get(top), True)} ({v[s]['plateau']})" for s in ("sync", "adpsgd")
        )
        + ".",
        f"- Largest multiplier whose mean and every smaller one's lie within {100 * WER_GOAL:.0f} % of m = 1 (equal "
        f"epochs): sync {ok['sync'] or '–'}, adpsgd {ok['adpsgd'] or '–'}; adpsgd's at least 2x sync's: "
        f"{_ratio(ok, results['setup']['multipliers'])}{_few_seeds(results)}. At their own plateaus: sync "
        f"{results['largest_ok_multiplier_own_plateau']['sync'] or '–'}, adpsgd "
        f"{results['largest_ok_multiplier_own_plateau']['adpsgd'] or '–'}.",
        f"- Largest seed range at m = 1 and m = {top} (equal epochs): {_pct(results['seed_spread_rel'])}.",
        f"- {_best_vs_default(results)}",
        f"- {_updates(results)}",
    ]
    if results["pending_runs"]:
        lines.append(f"- {len(results['pending_runs'])} runs pending: the verdicts above use the finished runs only.")
    report.add("Goals", "\n".join(lines))


def _few_seeds(results: dict) -> str:
    """A caveat naming the multipliers measured with fewer seeds than m = 1 (empty when none)."""
    short = [
        f"{s} m = {m} ({g['equal']['n']})"
        for s, by_m in sorted(results["groups"].items(), reverse=True)
        for m, g in by_m.items()
        if g["equal"] is not None and g["equal"]["n"] < len(results["setup"]["seeds"])
    ]
    return f" (provisional: fewer seeds at {', '.join(short)})" if short else ""


def _best_vs_default(results: dict) -> str:
    """The best recipe against the default, and whether the seeds' range can tell them apart."""
    recipes = {r["recipe"]: r for r in results["recipes_at_top"] if r["measured"] and r["equal"] is not None}
    best, default = results["best_recipe_at_top"], results["setup"]["default_recipe"]
    if best is None or default not in recipes:
        return "Best recipe at the top m: not measured."
    if best == default:
        return "The default recipe has the lowest mean dev WER at E of the recipes measured."
    gain = 1 - recipes[best]["equal"]["mean"] / recipes[default]["equal"]["mean"]
    noise = max((recipes[n]["equal"]["spread_rel"] or 0.0) for n in (best, default))
    call = "more than" if gain > noise else "within"
    return (
        f"Best recipe: {results['setup']['recipes'][best]['title']}, {100 * gain:.1f} % relative below the default's "
        f"mean at E, {call} the larger seed range of the two ({100 * noise:.1f} %)."
    )


def _updates(results: dict) -> str:
    """How many updates m = 1 and the top m made by E: the large batch's handicap at equal epochs."""
    top = results["setup"]["top"]
    made = {
        m: [
            r["updates_equal"]
            for r in results["runs"]
            if r["m"] == m and r["updates_equal"] and r["recipe"] == results["setup"]["default_recipe"]
        ]
        for m in (1, top)
    }
    if not all(made.values()):
        return "Updates by E: not measured."
    mean = {m: sum(v) / len(v) for m, v in made.items()}
    return (
        f"By E, m = 1 made {mean[1]:.0f} updates per worker and m = {top} {mean[top]:.0f}: the paper's parity at equal "
        "epochs needs the large batch's fewer updates to suffice; here its curves still fall when the anneal has "
        "shrunk the LR, and its seeds spread several times wider than m = 1's."
    )


def _ratio(ok: dict, multipliers: list[int]) -> str:
    """Whether adpsgd tolerates at least twice sync's multiplier, where the tested multipliers can tell."""
    if None in ok.values():
        return "not measured"
    if ok["adpsgd"] >= 2 * ok["sync"]:
        return "met"
    if ok["adpsgd"] == ok["sync"] == 1:
        return "**missed** (neither held any m above 1)"
    if ok["adpsgd"] == max(multipliers):
        return f"undetermined (adpsgd held up to the largest m tested, {ok['adpsgd']})"
    return "**missed**"


def _figure(results: dict):
    """Left: dev WER per epoch of every run; right: mean and seed range per m, both views, both strategies."""
    fig, (left, right) = new_figure(2, width_per_panel=5.5)
    colours = {1: "C0", 2: "C1", 4: "C2", 10: "C3", 16: "C4"}
    for r in results["runs"]:
        style = "-" if r["strategy"] == "sync" else "--"
        if r["recipe"] != results["setup"]["default_recipe"]:
            style = ":"
        left.plot(
            range(1, r["epochs"] + 1), r["dev_wer_curve"], style, color=colours.get(r["m"], "k"), alpha=0.7, linewidth=1
        )
    for m, colour in colours.items():
        left.plot([], [], color=colour, label=f"m = {m}")
    left.plot([], [], "k-", label="sync")
    left.plot([], [], "k--", label="adpsgd")
    left.plot([], [], "k:", label="rival recipes (sync)")
    if results["base_plateau_epochs"]:
        left.axvline(results["base_plateau_epochs"], color="0.5", linewidth=0.8)
    left.set_xlabel("epoch")
    left.set_ylabel("dev WER (greedy)")
    left.set_ylim(top=1.05)
    left.legend(fontsize=6)
    for (s, by_m), colour in zip(sorted(results["groups"].items(), reverse=True), ("C0", "C1")):
        for view, marker in zip(VIEWS, ("o", "s")):
            pts = [(int(m), g[view]) for m, g in by_m.items() if g[view] is not None]
            if not pts:
                continue
            xs = [m for m, _ in pts]
            means = [g["mean"] for _, g in pts]
            errs = [[g["mean"] - min(g["values"]) for _, g in pts], [max(g["values"]) - g["mean"] for _, g in pts]]
            right.errorbar(
                xs,
                means,
                yerr=errs,
                marker=marker,
                color=colour,
                linestyle="-" if view == "equal" else ":",
                capsize=3,
                label=f"{s}, {VIEW_NAMES[view]}",
            )
    right.set_xscale("log")
    ms = sorted({int(m) for by_m in results["groups"].values() for m in by_m})
    right.set_xticks(ms, [str(m) for m in ms])
    right.minorticks_off()
    right.set_xlabel("batch multiplier m (global batch m x B)")
    right.set_ylabel("dev WER (mean, bars: seeds' range)")
    if right.lines:
        right.legend(fontsize=7)
    return fig
