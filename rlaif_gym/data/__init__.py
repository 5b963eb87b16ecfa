"""Typed records and loaders for the RLAIF datasets (TL;DR posts and comparisons, HH-RLHF).

See :mod:`rlaif_gym.data.loaders` for how a source (local folder, Hugging Face Hub, embedded
sample) is chosen; :func:`trl_prompt_dataset` builds a task's prompt dataset for TRL's
trainers.
"""

from rlaif_gym.data.loaders import (
    ASSISTANT_PREFIX,
    DATA_LAYOUT,
    ENV_DATA_DIR,
    HIGH_CONFIDENCE,
    PAIR_FILE_FORMATS,
    DataSourceWarning,
    HubUnavailableError,
    format_tldr_post,
    load_hh,
    load_preference_pairs,
    load_tldr_comparisons,
    load_tldr_posts,
    resolve_data_dir,
    split_hh_dialogue,
)
from rlaif_gym.data.records import (
    DataSource,
    HHPair,
    PreferencePair,
    PromptRecord,
    RecordList,
    TldrComparison,
    TldrPost,
)
from rlaif_gym.data.trl_dataset import TRL_COLUMNS, trl_prompt_dataset

__all__ = [
    "ASSISTANT_PREFIX",
    "DATA_LAYOUT",
    "ENV_DATA_DIR",
    "HIGH_CONFIDENCE",
    "PAIR_FILE_FORMATS",
    "DataSource",
    "DataSourceWarning",
    "HHPair",
    "HubUnavailableError",
    "PreferencePair",
    "PromptRecord",
    "RecordList",
    "TRL_COLUMNS",
    "TldrComparison",
    "TldrPost",
    "format_tldr_post",
    "load_hh",
    "load_preference_pairs",
    "load_tldr_comparisons",
    "load_tldr_posts",
    "resolve_data_dir",
    "split_hh_dialogue",
    "trl_prompt_dataset",
]
