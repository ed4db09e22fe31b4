"""A campaign as one figure: each coarse map, the agent's proposals and the rescans that ran.

Per coarse map, two panels side by side: the raw coarse map, and the map the agent decided on
(restored, or raw when restoration did not pay) with each proposal's box coloured by its state
and every completed rescan drawn inside its box at its own, finer step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from asirp.safe_files import atomic_write
from control_room.agent.evaluation import TiledEvaluation, grid_map_from_events
from control_room.agent.ledger import Ledger

STATE_COLOURS = {
    "pending": "orange",
    "accepted": "deepskyblue",
    "submitted": "deepskyblue",
    "completed": "lime",
    "failed": "red",
    "rejected": "grey",
}


def _rescan_image(catalog: Any, run_uid: str, element: str) -> tuple[np.ndarray, list[float]]:
    """A completed rescan's map ``(rows, columns)`` and its extent ``[x0, x1, y0, y1]`` µm."""
    run = catalog[run_uid]
    proposal = run.metadata["start"]["proposal"]
    step = float(proposal["step_um"])
    origin = (proposal["x_range_um"][0], proposal["y_range_um"][0])
    image, x_um, y_um = grid_map_from_events(run, element, "i0", step, origin)
    half = step / 2
    return image, [x_um[0] - half, x_um[-1] + half, y_um[0] - half, y_um[-1] + half]


def draw_campaign(
    catalog: Any, campaign: str, output: str | Path, *, overwrite: bool = False
) -> Path:
    """Draw the campaign to a new PNG file; its path.

    Raises
    ------
    LookupError
        The campaign has no decision yet.
    asirp.safe_files.OutputExistsError
        ``output`` exists and ``overwrite`` is false.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    ledger = Ledger.load(catalog, campaign)
    if not ledger.decisions:
        raise LookupError(f"campaign {campaign!r} has no decision in tiled yet")
    evaluation = TiledEvaluation(catalog)
    figure, axes = plt.subplots(
        len(ledger.decisions), 2, figsize=(11, 5 * len(ledger.decisions)), squeeze=False
    )
    for row, (coarse_uid, decision) in enumerate(ledger.decisions.items()):
        (seen,) = evaluation(coarse_uid, [])
        x_um, y_um = seen["x_um"], seen["y_um"]
        half = 0.5 * seen["step_um"]
        extent = [x_um[0] - half, x_um[-1] + half, y_um[0] - half, y_um[-1] + half]
        used = decision["saw"].get("map_used", "raw")
        decided = (
            seen["restored"] if used == "restored" and seen["restored"] is not None else seen["raw"]
        )
        for ax, image, title in (
            (axes[row, 0], seen["raw"], f"raw coarse map ({seen['step_um']:g} µm step)"),
            (axes[row, 1], decided, f"{used} map, proposals and rescans"),
        ):
            low, high = np.nanpercentile(image, [1, 99.5])
            ax.imshow(
                image, origin="lower", extent=extent, cmap="magma", interpolation="nearest",
                vmin=low, vmax=high,
            )  # fmt: skip
            ax.set_title(f"{decision.get('element')} {title}", fontsize=10)
            ax.set_xlabel("x (µm)")
            ax.set_ylabel("y (µm)")
        ax = axes[row, 1]
        for proposal in decision.get("proposals") or []:
            ident = proposal["_id"]
            state = ledger.state(ident)
            scanned = ledger.approved(ident) or proposal
            outcome = ledger.outcomes.get(ident)
            if state == "completed" and outcome and outcome.get("run_uid"):
                image, box = _rescan_image(catalog, outcome["run_uid"], decision["element"])
                ax.imshow(
                    image, origin="lower", extent=box, cmap="viridis", interpolation="nearest"
                )
            (x0, x1), (y0, y1) = scanned["x_range_um"], scanned["y_range_um"]
            ax.add_patch(
                Rectangle(
                    (x0, y0),
                    x1 - x0,
                    y1 - y0,
                    fill=False,
                    lw=1.8,
                    ls="--" if state in ("rejected", "pending") else "-",
                    edgecolor=STATE_COLOURS.get(state, "white"),
                )
            )
            ax.annotate(ident.rsplit("-", 1)[-1], (x0, y1), color="white", fontsize=8, va="bottom")
        ax.set_xlim(extent[:2])
        ax.set_ylim(extent[2:])
    axes[0, 1].legend(
        handles=[
            Patch(fill=False, edgecolor=c, label=s)
            for s, c in STATE_COLOURS.items()
            if s != "accepted"
        ],
        loc="upper right",
        fontsize=7,
        framealpha=0.6,
    )
    figure.suptitle(
        f"campaign {campaign}: {len(ledger.proposals)} proposals, "
        f"{sum(ledger.state(i) == 'completed' for i in ledger.proposals)} rescans run"
    )
    figure.tight_layout()
    path = Path(output)
    with atomic_write(path, overwrite=overwrite, hint="use --overwrite") as out:
        figure.savefig(out.file, format="png", dpi=90)
    plt.close(figure)
    return path
