# A small sweep on the digits demo: 8 random trials of 4 epochs, about 3 minutes on 2 CPU cores.
#   python sweep.py recipes/demo_sweep.py
from recipes.demo import *  # noqa: F401,F403

model = "resnet18"
epochs = 4
monitor = "val_acc"
sweep = {
    "method": "random",
    "metric": {"name": "val_acc", "goal": "maximize"},
    "run_cap": 8,
    "parameters": {
        "lr": {"distribution": "log_uniform_values", "min": 3e-4, "max": 1e-2},
        "weight_decay": {"values": [0.0, 0.05]},
        "label_smoothing": {"values": [0.0, 0.1]},
        "augment": {"values": ["none", "light"]},
    },
    "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 2},  # epoch 1 is too noisy to judge
}
