"""Searches a photo index with a query image and writes the results as JSON, HTML and PNG.

  python -m iah_jax.search --index photo_index/ --query queries/test_000000.png --by-category \
      --out search_out/

Writes OUT/results.json (ids, paths, Hamming distances and, with --by-category, the groups of
IAH section IV: one per category with predicted p_j >= --threshold, with p_j) and
OUT/results.html, a self-contained page: the query, its predicted labels, then one row per group
with each result's saliency map (IAH Fig. 5); --saliency adds OUT/saliency.png, the same as a
sheet for papers. --ranking weighted ranks by query-adaptive weighted Hamming distance (methods
with bit weights: iah, qadwh). The run is the one that built the index (or --run, which must
encode the same codes).
"""

from absl import app
from absl import flags

from iah_jax import cli
from iah_jax import console
from iah_jax import runtime

FLAGS = flags.FLAGS
flags.DEFINE_string("index", None, "Index directory written by iah_jax.index.")
flags.DEFINE_string("query", None, "Query image file.")
flags.DEFINE_string("out", None, "Directory for results.json, results.html (and saliency.png).")
flags.DEFINE_integer("k", 20, "Results per list (per group with --by-category).", lower_bound=1)
flags.DEFINE_bool("by-category", False, "Group the results by predicted category (IAH sec. IV).")
flags.DEFINE_enum("ranking", "hamming", ["hamming", "weighted"], "Semantic ranking distance.")
flags.DEFINE_enum("backend", "jax", ["jax", "faiss"], "Hamming search backend.")
# 0.2 is retrieval.DEFAULT_THRESHOLD, written out: importing iah_jax.retrieval loads JAX, and this
# module stays light until the inputs are checked.
flags.DEFINE_float("threshold", 0.2, "Category probability threshold p_j (IAH: 0.2).")
flags.DEFINE_bool("saliency", False, "Also write saliency.png, the results as a PNG sheet.")
flags.DEFINE_enum("saliency_reduce", "max", ["max", "sum"], "Per-pixel max or sum over proposals.")
flags.DEFINE_string("run", None, "Run directory (default: the one that built the index).")
flags.mark_flags_as_required(["index", "query", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runtime.configure_entry_point()  # before JAX and TensorFlow start their thread pools
  from iah_jax.serving import querying  # light: JAX is imported only after the input checks

  with console.progress_logging() as logger:
    output = querying.search_photos(
        FLAGS.index,
        FLAGS.query,
        FLAGS.out,
        k=FLAGS.k,
        by_category=FLAGS["by-category"].value,
        ranking=FLAGS.ranking,
        backend=FLAGS.backend,
        threshold=FLAGS.threshold,
        saliency_sheet=FLAGS.saliency,
        saliency_reduce=FLAGS.saliency_reduce,
        run_dir=FLAGS.run,
        log=logger.info,
    )
  labels = output["query"]["predicted_labels"]
  if labels is not None:
    print(
        "predicted labels: "
        + (", ".join(f"{l['name']} {l['probability']:.2f}" for l in labels) or "none")
    )
  for group in output["groups"] or []:
    top = ", ".join(f"{r['id']} (d={r['distance']})" for r in group["results"][:5])
    print(f"{group['name']} (p={group['query_probability']:.2f}): {top}")
  if output["groups"] is None:
    top = ", ".join(f"{r['id']} (d={r['distance']})" for r in output["results"][:5])
    print(f"top results: {top}")
  for note in output["notes"]:
    print(f"note: {note}")
  print("wrote " + ", ".join(output["files"].values()))


if __name__ == "__main__":
  cli.run(main)
