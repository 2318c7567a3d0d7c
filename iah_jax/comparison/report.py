"""The comparison report: `comparison.md` laid out like IAH Table II, and the paper's figures.

- Table II: one table per metric (NDCG@k, ACG@k for each table k, MAP, weighted MAP), a row per
  method, a column per code length; the best value of each column in bold.
- Seeds: when a (method, bits) has cells of several seeds, every value is `mean ± std` over them
  (sample std, ddof = 1), and a column's best is bold only when its interval mean ± std overlaps
  no other row's (`claimed_best`); otherwise the column's leaders are named as tied within noise.
  Under the MAP table an "ordering" line per code length lists only orderings between groups
  whose intervals do not overlap (`ordered_groups`). One seed: values and bold as before.
- Collapse: a value whose codes collapsed (cell["code_health"], iah_jax.retrieval.code_health;
  its ranking is the tie order) is marked †, footnoted with its distinct codes, and never bold.
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

import dataclasses
import math
import os

import matplotlib
import numpy as np

from iah_jax import baselines
from iah_jax import methods
from iah_jax.retrieval import category_tables
from iah_jax.retrieval import code_health

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

TABLES = f"section IV tables, p >= {category_tables.DEFAULT_THRESHOLD}"
WHOLE_DATABASE = "whole database"
COLLAPSED_MARK = "†"


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


@dataclasses.dataclass
class Entry:
  """One table entry: a method's (or variant's) metrics at one code length, one per seed."""

  seeds: list = dataclasses.field(default_factory=list)
  metrics: list = dataclasses.field(default_factory=list)
  collapsed: list = dataclasses.field(default_factory=list)  # (seed, code_health) collapsed

  def add(self, cell: dict, metrics: dict, kind: str = "semantic") -> None:
    self.seeds.append(cell.get("seed"))
    self.metrics.append(metrics)
    health = cell.get("code_health", {}).get(kind)
    if health is not None and health["collapsed"]:
      self.collapsed.append((cell.get("seed"), health))

  def values(self, key: str) -> list[float] | None:
    """The value of `key` of every seed; None when one lacks it or is NaN."""
    found = [metrics.get(key) for metrics in self.metrics]
    if not found or any(value is None or math.isnan(float(value)) for value in found):
      return None
    return [float(value) for value in found]


def mean_std(values: list[float]) -> tuple[float, float | None]:
  """(mean, sample standard deviation with ddof = 1; None for one value)."""
  array = np.asarray(values, np.float64)
  return float(array.mean()), (float(array.std(ddof=1)) if len(array) > 1 else None)


def interval(values: list[float]) -> tuple[float, float]:
  """[mean - std, mean + std] (one value: the point)."""
  mean, std = mean_std(values)
  return mean - (std or 0.0), mean + (std or 0.0)


def claimed_best(candidates: dict[str, list[float]]) -> tuple[str | None, list[str]]:
  """(the title whose interval lies above every other's, or None; the titles tied with the
  highest mean within noise: every title whose interval overlaps the leader's, leader first).

  `candidates`: title -> values over seeds, the rows that may be claimed (not collapsed, at
  least two seeds); with one candidate it is the best.
  """
  if not candidates:
    return None, []
  ranked = sorted(candidates, key=lambda title: -mean_std(candidates[title])[0])
  low, _ = interval(candidates[ranked[0]])
  tied = [ranked[0]] + [title for title in ranked[1:] if interval(candidates[title])[1] >= low]
  return (ranked[0], []) if len(tied) == 1 else (None, tied)


def ordered_groups(candidates: dict[str, list[float]]) -> list[list[str]]:
  """The titles by decreasing mean, cut into groups so that every interval of a group lies above
  every interval of each later group (titles within a group are not ordered)."""
  ranked = sorted(candidates, key=lambda title: -mean_std(candidates[title])[0])
  groups: list[list[str]] = []
  for index, title in enumerate(ranked):
    if not groups:
      groups.append([title])
      continue
    above = min(interval(candidates[other])[0] for other in ranked[:index])
    below = max(interval(candidates[other])[1] for other in ranked[index:])
    if above > below:
      groups.append([title])
    else:
      groups[-1].append(title)
  return groups


def _semantic_rows(cells: list[dict]) -> dict[str, dict[int, Entry]]:
  """row title -> {bits: Entry over the cells' seeds}, in the order the cells come."""
  rows: dict[str, dict[int, Entry]] = {}
  for cell in cells:
    if not cell["semantic_table"]:
      continue
    title = display_title(cell["method"])
    rows.setdefault(title, {}).setdefault(cell["bits"], Entry()).add(cell, cell["metrics"])
    for variant, variant_metrics in cell.get("variants", {}).items():
      # The same codes ranked another way: collapsed codes collapse the variant too.
      rows.setdefault(f"{title} ({variant})", {}).setdefault(cell["bits"], Entry()).add(
          cell, variant_metrics
      )
  return rows


def format_values(values: list[float], multi_seed: bool) -> str:
  """'0.1234' (one seed, single-seed report), '0.1234 ± 0.0056', or '0.1234 (1 seed)'."""
  mean, std = mean_std(values)
  if not multi_seed:
    return f"{mean:.4f}"
  return f"{mean:.4f} (1 seed)" if std is None else f"{mean:.4f} ± {std:.4f}"


def collapse_footnote(where: list[tuple[str, Entry]]) -> str:
  """'† collapsed codes (...): IAH at 8 bits, seed 0: N distinct codes of M, ...'."""
  parts = [
      f"{title}, seed {seed}: {code_health.describe(health)}"
      for title, entry in where
      for seed, health in entry.collapsed
  ]
  return (
      f"{COLLAPSED_MARK} collapsed codes (every Hamming distance (nearly) 0: the ranking is the "
      "tie order, so the value says nothing about the codes; never bold): " + "; ".join(parts)
  )


def _metric_table(
    rows: dict[str, dict[int, Entry]], bits: list[int], key: str, multi_seed: bool
) -> tuple[list[str], dict[int, list[str]], dict[int, dict[str, list[float]]]]:
  """(the table's lines and footnotes, {bits: titles tied within noise for the best},
  {bits: the claimable rows' values})."""
  bold: dict[int, set[str]] = {}
  tied: dict[int, list[str]] = {}
  claimable: dict[int, dict[str, list[float]]] = {}
  for q in bits:
    present = {
        title: (row[q], row[q].values(key))
        for title, row in rows.items()
        if q in row and row[q].values(key) is not None
    }
    eligible = {
        title: values
        for title, (entry, values) in present.items()
        if not entry.collapsed and (len(values) > 1 or not multi_seed)
    }
    claimable[q] = eligible
    if not multi_seed:  # one seed: every value equal to the best non-collapsed one, as before
      best = max((values[0] for values in eligible.values()), default=None)
      bold[q] = {title for title, values in eligible.items() if values[0] == best}
    else:
      leader, tied[q] = claimed_best(eligible)
      bold[q] = {leader} if leader is not None else set()
  lines = [
      "| method | " + " | ".join(f"{q} bits" for q in bits) + " |",
      "|---|" + "---:|" * len(bits),
  ]
  collapsed: list[tuple[str, Entry]] = []
  for title, row in rows.items():
    texts = []
    for q in bits:
      entry = row.get(q)
      values = entry.values(key) if entry is not None else None
      if values is None:
        texts.append("-")
        continue
      text = format_values(values, multi_seed)
      if entry.collapsed:
        text += COLLAPSED_MARK
        collapsed.append((f"{title} at {q} bits", entry))
      texts.append(f"**{text}**" if title in bold[q] else text)
    lines.append(f"| {title} | " + " | ".join(texts) + " |")
  if collapsed:
    lines += ["", collapse_footnote(collapsed)]
  return lines, {q: names for q, names in tied.items() if names}, claimable


def _by_method_and_bits(cells: list[dict]) -> dict[tuple[str, int], list[dict]]:
  """(method, bits) -> its cells (one per seed), in the order the cells come."""
  grouped: dict[tuple[str, int], list[dict]] = {}
  for cell in cells:
    grouped.setdefault((cell["method"], cell["bits"]), []).append(cell)
  return grouped


def _plot_curves(cells: list[dict], q: int, name: str, path: str) -> bool:
  """A line per method at q: the mean over its seeds, a band of ± std with several seeds."""
  figure, axes = plt.subplots(figsize=(6, 4))
  drawn = False
  for (method, bits), group in _by_method_and_bits(cells).items():
    if bits != q or not group[0]["semantic_table"]:
      continue
    ks = [
        k for k in _curve_ks(group[:1], name) if all(f"{name}@{k}" in c["metrics"] for c in group)
    ]
    if not ks:
      continue
    values = np.asarray([[cell["metrics"][f"{name}@{k}"] for k in ks] for cell in group])
    collapsed = any(
        cell.get("code_health", {}).get("semantic", {}).get("collapsed") for cell in group
    )
    (line,) = axes.plot(
        ks,
        values.mean(axis=0),
        marker="o",
        markersize=3,
        linestyle=":" if collapsed else "-",
        label=display_title(method) + (f" ({COLLAPSED_MARK} collapsed)" if collapsed else ""),
    )
    if len(group) > 1:
      std = values.std(axis=0, ddof=1)
      axes.fill_between(
          ks,
          values.mean(axis=0) - std,
          values.mean(axis=0) + std,
          color=line.get_color(),
          alpha=0.15,
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


def _seed_note(cells: list[dict]) -> str:
  """The notes line of a multi-seed report: how many seeds, which, and the rules."""
  seeds = sorted({cell.get("seed") for cell in cells}, key=lambda seed: (seed is None, seed))
  counts = {len(group) for group in _by_method_and_bits(cells).values()}
  if len(counts) == 1:
    over = f"over {counts.pop()} seeds ({', '.join(str(seed) for seed in seeds)})"
  else:
    over = (
        f"over the seeds each (method, bits) has ({min(counts)} to {max(counts)}; seeds "
        f"{', '.join(str(seed) for seed in seeds)}; the last table lists them; a value of one "
        "seed is marked '(1 seed)' and never bold)"
    )
  return (
      f"every value is mean ± sample standard deviation (ddof = 1) {over}; a column's best is "
      "bold only when its interval mean ± std overlaps no other row's, otherwise no bold and the "
      f"rows tied within noise are named under the table; collapsed codes ({COLLAPSED_MARK}) are "
      "never bold"
  )


def _category_entries(cells: list[dict]) -> list[tuple[str, int, list[tuple[dict, dict]]]]:
  """(row title, b, [(cell, scores {"map", "per_category_map"}) per seed]) of the category-aware
  codes, by b, the method's own retrieval first (section IV tables), then the whole database."""
  entries = []
  grouped = _by_method_and_bits([cell for cell in cells if "category_aware" in cell])
  for (method, _), group in sorted(
      grouped.items(), key=lambda item: item[1][0]["bits_per_category"]
  ):
    b = group[0]["bits_per_category"]
    if "category_aware_tables" in group[0]:
      entries.append(
          (
              f"{display_title(method)} ({TABLES})",
              b,
              [(c, c["category_aware_tables"]) for c in group],
          )
      )
      entries.append(
          (
              f"{display_title(method)} ({WHOLE_DATABASE})",
              b,
              [(c, c["category_aware"]) for c in group],
          )
      )
    else:
      entries.append((display_title(method), b, [(c, c["category_aware"]) for c in group]))
  return entries


def _category_value(values: list, multi_seed: bool, collapsed: bool) -> str:
  if any(value is None for value in values):
    return "-"
  return format_values([float(value) for value in values], multi_seed) + (
      COLLAPSED_MARK if collapsed else ""
  )


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
  multi_seed = any(len(group) > 1 for group in _by_method_and_bits(cells).values())
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
  notes = list(notes) + ([_seed_note(cells)] if multi_seed else [])
  lines += [f"- {note}" for note in notes]
  if notes:
    lines.append("")
  metric_keys = (
      [(f"NDCG@{k}", f"ndcg@{k}") for k in table_ks]
      + [(f"ACG@{k}", f"acg@{k}") for k in table_ks]
      + [("MAP", "map"), ("Weighted MAP", "wmap")]
  )
  for title, key in metric_keys:
    table, tied, claimable = _metric_table(rows, bits, key, multi_seed)
    lines += [f"## {title}", ""] + table + [""]
    for q, names in tied.items():
      lines.append(
          f"- {q} bits: no best claimed, tied within noise (mean ± std intervals overlap): "
          + ", ".join(names)
      )
    if key == "map" and multi_seed:
      for q in bits:
        groups = ordered_groups(claimable[q])
        if len(groups) > 1:
          lines.append(
              f"- ordering at {q} bits (only where intervals do not overlap; braces: not "
              "ordered within noise): "
              + " > ".join(
                  group[0] if len(group) == 1 else "{" + ", ".join(group) + "}" for group in groups
              )
          )
    if tied or (key == "map" and multi_seed):
      lines.append("")

  lines += ["## NDCG@m and ACG@m against m (IAH Figs. 6-7)", ""]
  for q in bits:
    for name in ("ndcg", "acg"):
      filename = f"{name}_q{q}.png"
      if _plot_curves(cells, q, name, os.path.join(workdir, filename)):
        lines.append(f"![{name.upper()}@m at {q} bits]({filename})")
  lines.append("")

  category_entries = _category_entries(cells)
  if category_entries:
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
    collapsed_rows = []
    for title, b, per_seed in category_entries:
      healths = [cell.get("code_health", {}).get("category") for cell, _ in per_seed]
      whole_collapsed = any(health and health["collapsed"] for health in healths)
      piece_collapsed = {
          j for health in healths if health for j in health.get("collapsed_categories", [])
      }
      if whole_collapsed or piece_collapsed:
        collapsed_rows.append((title, b, per_seed))
      mean = _category_value([scores["map"] for _, scores in per_seed], multi_seed, whole_collapsed)
      per_category = [
          _category_value(
              [scores["per_category_map"][j] for _, scores in per_seed],
              multi_seed,
              whole_collapsed or j in piece_collapsed,
          )
          for j in range(len(per_seed[0][1]["per_category_map"]))
      ]
      lines.append(f"| {title} | {b} | {mean} | " + " | ".join(per_category) + " |")
      means = [
          None
          if any(scores["per_category_map"][j] is None for _, scores in per_seed)
          else float(np.mean([scores["per_category_map"][j] for _, scores in per_seed]))
          for j in range(len(per_seed[0][1]["per_category_map"]))
      ]
      by_b.setdefault(b, []).append((title, means))
    if collapsed_rows:
      parts = []
      for title, b, per_seed in collapsed_rows:
        for cell, _ in per_seed:
          health = cell.get("code_health", {}).get("category")
          if health and health["collapsed"]:
            parts.append(
                f"{title}, b = {b}, seed {cell.get('seed')}: {code_health.describe(health)}"
            )
          elif health and health.get("collapsed_categories"):
            names = [
                class_names[j] if j < len(class_names) else str(j)
                for j in health["collapsed_categories"]
            ]
            parts.append(
                f"{title}, b = {b}, seed {cell.get('seed')}: a single code for " + ", ".join(names)
            )
      lines += [
          "",
          f"{COLLAPSED_MARK} collapsed category codes (the ranking by that piece is the tie "
          "order): " + "; ".join(parts),
      ]
    lines.append("")
    for b, entries in sorted(by_b.items()):
      filename = f"per_category_map_b{b}.png"
      _plot_per_category(entries, class_names, b, os.path.join(workdir, filename))
      lines.append(f"![per-category MAP, b = {b}]({filename})")
    lines.append("")

  lines += [
      "## Time per cell",
      "",
      "| method | bits | b | seed | train / fit s | evaluate s | best step | features from | "
      "distinct database codes |",
      "|---|---:|---:|---:|---:|---:|---:|---|---:|",
  ]
  for cell in cells:
    health = cell.get("code_health", {}).get("semantic")
    distinct = (
        "-"
        if health is None
        else f"{health['distinct_codes']} of {health['num_codes']}"
        + (f" {COLLAPSED_MARK}" if health["collapsed"] else "")
    )
    seed = cell.get("seed")
    lines.append(
        f"| {display_title(cell['method'])} | {cell['bits']} | "
        f"{cell.get('bits_per_category') or '-'} | {'-' if seed is None else seed} | "
        f"{cell['train_seconds']:.0f} | "
        f"{cell['eval_seconds']:.1f} | {cell.get('best_step') or '-'} | "
        f"{cell.get('features_from') or '-'} | {distinct} |"
    )
  text = "\n".join(lines) + "\n"
  with open(os.path.join(workdir, "comparison.md"), "w") as file:
    file.write(text)
  return text
