"""Video data for training and evaluation: sources (Kinetics CSVs, list files) and MindSpore
datasets that skip bad videos instead of crashing a long run. Clip sampling and augmentation
are `i3d_video.clips` (numpy, shared with the torch side); clips travel as uint8."""
from .sources import (Video, check_videos, class_names, num_classes, read_kinetics, read_list,
                      read_source, split_videos)
from .dataset import EvalSource, TrainSource, eval_dataset, train_dataset, workers

__all__ = ["Video", "check_videos", "class_names", "num_classes", "read_kinetics", "read_list",
           "read_source", "split_videos", "EvalSource", "TrainSource", "eval_dataset",
           "train_dataset", "workers"]
