"""Video data for training and evaluation: sources (Kinetics CSVs, list files), clip sampling,
transforms, and MindSpore datasets that skip bad videos instead of crashing a long run."""
from .sources import Video, check_videos, class_names, read_kinetics, read_list, read_source
from .clips import eval_clips, train_indices
from .dataset import EvalSource, TrainSource, eval_dataset, train_dataset

__all__ = ["Video", "check_videos", "class_names", "read_kinetics", "read_list", "read_source",
           "eval_clips", "train_indices", "EvalSource", "TrainSource", "eval_dataset",
           "train_dataset"]
