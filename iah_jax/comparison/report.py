"""The comparison report: `comparison.md` laid out like IAH Table II, and the paper's figures.

- Table II: one table per metric (NDCG@k, ACG@k for each table k, MAP, weighted MAP), a row per
  method, a column per code length; the best value of each column in bold.
- Figs. 6-7: NDCG@m and ACG@m against m, one PNG per code length (`ndcg_q<q>.png`,
  `acg_q<q>.png`), a line per method.
- Fig. 8 / 9: per-category MAP of the category-aware codes (IAH, with its section IV
  probability tables and over the whole database, and the category baseline) at each b, a table
  and a grouped-bar PNG (`per_category_map_b<b>.png`).

Row titles and which method ranks by query-adaptive weighted Hamming distance are what the
methods declare (iah_jax.methods, iah_jax.baselines.TITLES); the p threshold of the section IV
tables is retrieval.category_tables.DEFAULT_THRESHOLD.
"""

from __future__ import annotations

import math
import os

import matplotlib

from iah_jax import baselines
from iah_jax import methods
from iah_jax.retrieval import category_tables

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

TABLES = f"section IV tables, p >= {category_tables.DEFAULT_THRESHOLD}"
WHOLE_DATABASE = "whole database"


def display_title(method: str) -> str:
  """The display title a method declares (deep: iah_jax.methods, shallow: iah_jax.baselines);
  the name itself for a method no longer registered."""
  if method in methods.names():
    return methods.get(method).title
  return baselines.TITLES.get(method, method)


def _curve_ks(cells: list[dict], name: str) -> list[int]:
  found = {
      int(key.split("@")[1])
      for cell in cells
      for key in cell["metrics"]
      if key.startswith(name + "@")
  }
  return sorted(found)


def _semantic_rows(cells: list[dict]) -> dict[str, dict[int, dict]]:
  """row title -> {bits: metrics}, in the order the cells come."""
  rows: dict[str, dict[int, dict]] = {}
  for cell in cells:
    if not cell["semantic_table"]:
      continue
    rows.setdefault(display_title(cell["method"]), {})[cell["bits"]] = cell["metrics"]
    for variant, variant_metrics in cell.get("variants", {}).items():
      rows.setdefault(f"{display_title(cell['method'])} ({variant})", {})[
          cell["bits"]
      ] = variant_metrics
  return rows


def _metric_table(rows: dict[str, dict[int, dict]], bits: list[int], key: str) -> list[str]:
  best = {}
  for q in bits:
    values = [row[q][key] for row in rows.values() if q in row and key in row[q]]
    best[q] = max(values) if values else None
  lines = [
      "| method | " + " | ".join(f"{q} bits" for q in bits) + " |",
      "|---|" + "---:|" * len(bits),
  ]
  for title, row in rows.items():
    cells = []
    for q in bits:
      value = row.get(q, {}).get(key)
      if value is None or (isinstance(value, float) and math.isnan(value)):
        cells.append("-")
      else:
        text = f"{value:.4f}"
        cells.append(f"**{text}**" if value == best[q] else text)
    lines.append(f"| {title} | " + " | ".join(cells) + " |")
  return lines


def _plot_curves(cells: list[dict], q: int, name: str, path: str) -> bool:
  figure, axes = plt.subplots(figsize=(6, 4))
  drawn = False
  for cell in cells:
    if cell["bits"] != q or not cell["semantic_table"]:
      continue
    ks = _curve_ks([cell], name)
    if not ks:
      continue
    axes.plot(
        ks,
        [cell["metrics"][f"{name}@{k}"] for k in ks],
        marker="o",
        markersize=3,
        label=display_title(cell["method"]),
    )
    drawn = True
  if drawn:
    axes.set_xscale("log")
    axes.set_xlabel("m (number of top-ranked images)")
    axes.set_ylabel(f"{name.upper()}@m")
    axes.set_title(f"{name.upper()}@m, {q} bits")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
  plt.close(figure)
  return drawn


def _plot_per_category(
    entries: list[tuple[str, list]], class_names: list[str], b: int, path: str
) -> None:
  figure, axes = plt.subplots(figsize=(max(6, 0.6 * len(class_names) * len(entries)), 4))
  width = 0.8 / len(entries)
  for offset, (title, values) in enumerate(entries):
    positions = [
        index + (offset - (len(entries) - 1) / 2) * width for index in range(len(class_names))
    ]
    axes.bar(positions, [0.0 if value is None else value for value in values], width, label=title)
  axes.set_xticks(range(len(class_names)))
  axes.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
  axes.set_ylabel("MAP")
  axes.set_ylim(0, 1)
  axes.set_title(f"Per-category MAP of category-aware codes, b = {b}")
  axes.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def write_report(
    cells: list[dict],
    workdir: str,
    *,
    dataset: str,
    table_ks: tuple[int, ...],
    class_names: list[str],
    ties: str,
    notes: list[str] = (),
) -> str:
  """Writes comparison.md and the PNGs into `workdir`; returns the Markdown text."""
  bits = sorted({cell["bits"] for cell in cells})
  rows = _semantic_rows(cells)
  sizes = next(((cell["num_queries"], cell["num_database"]) for cell in cells), (0, 0))
  weighted = ", ".join(
      methods.get(name).title
      for name in methods.names()
      if methods.get(name).capabilities.query_adaptive_ranking
  )
  lines = [
      f"# Method comparison: {dataset}",
      "",
      f"{sizes[0]} queries against {sizes[1]} database images; Hamming ranking"
      + (f" ({weighted}: query-adaptive weighted Hamming ranking)" if weighted else "")
      + f", ties {ties!r}; relevant = at least one shared label, graded by the number of "
      "shared labels. Layout of IAH Table II.",
      "",
  ]
  lines += [f"- {note}" for note in notes]
  if notes:
    lines.append("")
  metric_keys = (
      [(f"NDCG@{k}", f"ndcg@{k}") for k in table_ks]
      + [(f"ACG@{k}", f"acg@{k}") for k in table_ks]
      + [("MAP", "map"), ("Weighted MAP", "wmap")]
  )
  for title, key in metric_keys:
    lines += [f"## {title}", ""] + _metric_table(rows, bits, key) + [""]

  lines += ["## NDCG@m and ACG@m against m (IAH Figs. 6-7)", ""]
  for q in bits:
    for name in ("ndcg", "acg"):
      filename = f"{name}_q{q}.png"
      if _plot_curves(cells, q, name, os.path.join(workdir, filename)):
        lines.append(f"![{name.upper()}@m at {q} bits]({filename})")
  lines.append("")

  category_cells = [cell for cell in cells if "category_aware" in cell]
  if category_cells:
    threshold = category_tables.DEFAULT_THRESHOLD
    lines += [
        "## Category-aware codes: per-category MAP (IAH Figs. 8-9)",
        "",
        "For category j every query carrying j ranks database items by the Hamming "
        "distance of piece j; relevant = the item carries j. IAH's own retrieval (section "
        f"IV, '{TABLES}') searches table j only when the query's p_j >= {threshold} and holds "
        f"only items with p_j >= {threshold} (relevant items left out count as missed); "
        f"'{WHOLE_DATABASE}' ranks every item. The Fig. 9 baseline has no p.",
        "",
        "| method | b | mean | " + " | ".join(class_names) + " |",
        "|---|---:|---:|" + "---:|" * len(class_names),
    ]
    by_b: dict[int, list[tuple[str, list]]] = {}
    for cell in sorted(category_cells, key=lambda cell: cell["bits_per_category"]):
      variants = [(display_title(cell["method"]), cell["category_aware"])]
      if "category_aware_tables" in cell:  # the method's own retrieval first, then without
        variants = [
            (f"{display_title(cell['method'])} ({TABLES})", cell["category_aware_tables"]),
            (f"{display_title(cell['method'])} ({WHOLE_DATABASE})", cell["category_aware"]),
        ]
      for title, scores in variants:
        per_category = scores["per_category_map"]
        values = " | ".join("-" if value is None else f"{value:.4f}" for value in per_category)
        lines.append(
            f"| {title} | {cell['bits_per_category']} | {scores['map']:.4f} | " f"{values} |"
        )
        by_b.setdefault(cell["bits_per_category"], []).append((title, per_category))
    lines.append("")
    for b, entries in sorted(by_b.items()):
      filename = f"per_category_map_b{b}.png"
      _plot_per_category(entries, class_names, b, os.path.join(workdir, filename))
      lines.append(f"![per-category MAP, b = {b}]({filename})")
    lines.append("")

  lines += [
      "## Time per cell",
      "",
      "| method | bits | b | train / fit s | evaluate s | " "best step | features from |",
      "|---|---:|---:|---:|---:|---:|---|",
  ]
  for cell in cells:
    lines.append(
        f"| {display_title(cell['method'])} | {cell['bits']} | "
        f"{cell.get('bits_per_category') or '-'} | {cell['train_seconds']:.0f} | "
        f"{cell['eval_seconds']:.1f} | {cell.get('best_step') or '-'} | "
        f"{cell.get('features_from') or '-'} |"
    )
  text = "\n".join(lines) + "\n"
  with open(os.path.join(workdir, "comparison.md"), "w") as file:
    file.write(text)
  return text
