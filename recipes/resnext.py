# ResNeXt-50 (32x4d) on the 500-class ImageNet-Sketch competition data, 5 stratified folds.
#   torchrun --nproc_per_node=4 train.py recipes/resnext.py
model = "resnext50_32x4d"
pretrained = True
data_dir, train_csv = "data/train", "data/train.csv"
test_dir, test_csv = "data/test", "data/test.csv"
image_size, batch_size, epochs = 224, 64, 20
optimizer, lr, weight_decay = "AdamW", 3e-4, 0.05
warmup_epochs = 1
loss, label_smoothing = "CE", 0.1
mixup_ratio, cutmix_ratio = 0.2, 0.2
augment = "light"
folds = 5
early_stopping, monitor = 5, "val_acc"
cache = "auto"  # on a GPU: images resident there when they fit (about 4 GiB for 15,000 sketches), else decoded by the workers

# python sweep.py recipes/resnext.py --count 30: the original project's W&B bayes sweep (each trial trains fold 0)
sweep = {
    "method": "bayes",
    "metric": {"name": "val_acc", "goal": "maximize"},
    "early_terminate": {"type": "hyperband", "min_iter": 3, "eta": 3},
    "parameters": {
        "lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 3e-3},
        "batch_size": {"values": [32, 64, 128]},
        "optimizer": {"values": ["AdamW", "SGD"]},
        "loss": {"values": ["CE", "Focal"]},
        "label_smoothing": {"values": [0.0, 0.1, 0.2]},
        "focal_alpha": {"min": 0.25, "max": 1.0},
        "focal_gamma": {"min": 1.0, "max": 3.0},
        "cutmix_ratio": {"min": 0.0, "max": 0.5},
        "mixup_ratio": {"min": 0.0, "max": 0.5},
    },
}
