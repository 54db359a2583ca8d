"""What a training row's target is: its class index, or (distillation, engine/train/distill.py) a row of class
probabilities the table carries in its SOFT column. Every batch source indexes the tensor this returns, so soft
targets reach the loss through every source as integer ones do; validation targets stay integer."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

SOFT = "soft_target"  # a column of float32 arrays, one probability per class


def training_targets(table: pd.DataFrame) -> torch.Tensor:
    """The training rows' targets: N x C float probabilities when the table carries them, else N class indices."""
    if SOFT in table and len(table):  # (an empty table: the store builds its eval view with no training rows)
        return torch.from_numpy(np.stack(table[SOFT].to_numpy()).astype(np.float32))
    return torch.tensor(table["target"].to_numpy())
