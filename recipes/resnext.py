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
cache = "memory"
