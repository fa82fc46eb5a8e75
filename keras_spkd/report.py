"""A run report: one self-contained HTML page and its markdown twin."""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path

from keras_spkd.plots import plot_training_curves
from keras_spkd.sources import model_label
from keras_spkd.summary import check_distill_summary, read_summary, sp_phase_title


def _last_row(csv_path: Path) -> dict[str, str]:
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[-1] if rows else {}


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _table(header: list[str], rows: list[list[str]]) -> tuple[str, str]:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    markdown = "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>", markdown


UNFINISHED = "Unfinished run"


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Writes `report.html` (images embedded) and `report.md` into a run directory.

    The report holds the run's configuration, the test accuracies of the
    teacher, the student alone and the SP student, each phase's final metrics,
    training curves, and the probe batch's similarity matrices at the first
    and the last recorded epoch.

    Args:
        run_dir: A directory written by `keras-spkd distill`.

    Returns:
        The paths of the HTML page and of the markdown twin.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise ValueError(
            f"{str(run_dir)!r} is not a keras-spkd run directory (no config.json); pass the "
            "--out directory of `keras-spkd distill`."
        )
    summary = read_summary(run_dir) if (run_dir / "summary.json").is_file() else {}
    kind = summary.get("kind") or json.loads(config_path.read_text()).get("kind", "distill")
    if kind != "distill":
        raise ValueError(
            f"{str(run_dir)!r} holds a {kind} run; the report covers distill runs "
            f"(see {kind}'s results.md / summary.json)."
        )
    if summary:
        check_distill_summary(summary, run_dir / "summary.json")
    config = summary.get("config") or json.loads(config_path.read_text()).get("config", {})
    titles = {"alone": "student alone", "sp": sp_phase_title(config).split(" (")[0]}
    histories = {
        titles[p]: run_dir / p / "history.csv"
        for p in titles
        if (run_dir / p / "history.csv").is_file()
    }
    sections_html, sections_md = [], []

    def section(title: str, html_body: str, md_body: str) -> None:
        sections_html.append(f"<h2>{html.escape(title)}</h2>\n{html_body}")
        sections_md.append(f"## {title}\n\n{md_body}")

    def figure(path: Path, caption: str) -> tuple[str, str]:
        return (
            f'<figure><img src="{_data_uri(path)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>",
            f"![{caption}]({path.relative_to(run_dir).as_posix()})",
        )

    if not summary:  # killed, or still running: say so before anything it shows
        phases = [p for p in ("alone", "sp") if (run_dir / p / "history.csv").is_file()]
        recorded = " and ".join(titles[p] for p in phases) or "nothing yet"
        text = (
            "This run has no summary.json: it was stopped before it finished (or is still "
            f"running). Recorded so far: {recorded}. Test accuracies, the export and the "
            "final comparison come when it finishes; rerun the same `keras-spkd distill` "
            "command with --resume (and this --out) to continue it."
        )
        section(UNFINISHED, f"<p><strong>{html.escape(text)}</strong></p>", f"**{text}**")
    if summary:
        accuracy = summary["accuracy"]
        rows = [
            ["teacher", model_label(config, "teacher"), f"{accuracy['teacher']:.2%}"],
            ["student alone", model_label(config, "student"), f"{accuracy['alone']:.2%}"],
            [
                sp_phase_title(config, summary.get("gamma_label")),
                model_label(config, "student"),
                f"{accuracy['sp']:.2%}",
            ],
        ]
        section("Test accuracy", *_table(["model", "architecture", "test accuracy"], rows))
        data = summary.get("data")
        if isinstance(data, dict) and data.get("class_names"):
            sizes = data.get("sizes", {})
            header = ["data", "classes", "train / val / test"]
            counts = " / ".join(str(sizes.get(k, "-")) for k in ("train", "val", "test"))
            names = ", ".join(str(n) for n in data["class_names"])
            section("Data", *_table(header, [[str(data.get("name", "")), names, counts]]))
        exports = summary.get("export", {}).get("table", [])
        if exports:
            rows = [
                [
                    row["model"],
                    f"{row['bytes'] / 1024:.1f} KiB",
                    "-" if row["accuracy"] is None else f"{row['accuracy']:.2%}",
                    "-" if row["agreement"] is None else f"{row['agreement']:.2%}",
                ]
                for row in exports
            ]
            header = ["export", "size", "test accuracy", "agrees with student"]
            section("Exported student (fed images as stored)", *_table(header, rows))
    if histories:
        metrics = {name: _last_row(path) for name, path in histories.items()}
        keys = sorted({k for row in metrics.values() for k in row if k != "epoch"})
        rows = [
            [k] + [f"{float(m[k]):.4g}" if k in m else "" for m in metrics.values()] for k in keys
        ]
        section("Final epoch", *_table(["metric", *metrics], rows))
        curves = run_dir / "curves.png"
        plot_training_curves(histories, curves)
        section("Training curves", *figure(curves, "losses and accuracy per epoch"))
    heat_maps = sorted((run_dir / "sp" / "similarity").glob("similarity_epoch*.png"))
    if heat_maps:
        picks = [heat_maps[0]] + ([heat_maps[-1]] if len(heat_maps) > 1 else [])
        parts = [figure(p, p.stem.replace("similarity_", "G on the probe batch, ")) for p in picks]
        section(
            "Similarity matrices during training",
            "\n".join(h for h, _ in parts),
            "\n\n".join(m for _, m in parts),
        )
    if (run_dir / "similarity.png").is_file():
        section(
            "Teacher, student alone and SP student",
            *figure(run_dir / "similarity.png", "final similarity matrices"),
        )
    rows = [
        [k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)]
        for k, v in sorted(config.items())
    ]
    section("Configuration", *_table(["option", "value"], rows))

    title = f"keras-spkd run: {run_dir.name}"
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;"
        "padding:3px 8px;text-align:left}img{max-width:100%}figure{margin:1em 0}"
        "figcaption{color:#555;font-size:90%}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(sections_html) + "\n</body></html>\n"
    )
    html_path, md_path = run_dir / "report.html", run_dir / "report.md"
    html_path.write_text(page, encoding="utf-8")
    md_path.write_text(f"# {title}\n\n" + "\n\n".join(sections_md) + "\n", encoding="utf-8")
    return html_path, md_path
