"""The stages of the data flow, each an artifact under runs/<profile>/ that the next one reads.

    corpus(run)          stories from the profile's source, cleaned, split train/val    corpus/<key>/
    shards(run)          the tokenizer and the uint16 token shards                       tokens/<key>/
    train_model(run)     one model, resumed if interrupted, reused when finished          models/<label>-<key>/
    sweep(run)           the hidden size x layers grid (one train_model per cell)
Each stage reuses its artifact when its parameters did not change, and builds what it needs upstream, so
every notebook also runs alone. The analyses that know a profile (grading, diversity, instruct) are the
modules beside this one; everything below `stages/` takes plain arguments.
"""

from tinystories_lib.stages.corpus import (
    corpus,
    diversity_sources,
    llm_stories,
    llm_stories_path,
    read_corpus,
)
from tinystories_lib.stages.models import (
    ModelRun,
    best,
    compute_curves,
    grid,
    heads_study,
    model_config,
    model_rows,
    sampling,
    summary_table,
    sweep,
    sweep_params,
    sweep_slots,
    train_model,
    trained_longer,
)
from tinystories_lib.stages.shards import codec, shards

__all__ = ["ModelRun", "best", "codec", "compute_curves", "corpus", "diversity_sources", "grid", "heads_study",
           "llm_stories", "llm_stories_path", "model_config", "model_rows", "read_corpus", "sampling", "shards", "summary_table", "sweep",
           "sweep_params", "sweep_slots", "train_model", "trained_longer"]
