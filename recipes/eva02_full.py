# 4th place of the ImageNet-Sketch competition: the same EVA02-L backbone fully fine-tuned at lr 1e-5, batch 16 x
# accumulation 8; gradient checkpointing so that EVA02-L at 448 px fits on most GPUs.
#   python train.py recipes/eva02_full.py pretrained=False --dry-run
#   torchrun --nproc_per_node=4 train.py recipes/eva02_full.py && python predict.py --kfold --tta
model = "eva02_large_patch14_448.mim_m38m_ft_in22k_in1k"
pretrained = True
num_classes = 500
data_dir, train_csv = "data/train", "data/train.csv"
test_dir, test_csv = "data/test", "data/test.csv"
image_size, batch_size, epochs = 448, 16, 10
accumulate_grad_batches = 8  # 128 images per update (per process)
folds = 5
freeze = "none"
optimizer, lr, weight_decay = "AdamW", 1e-5, 0.05
warmup_epochs = 1
drop_path = 0.1
grad_checkpointing = True
clip_grad_norm = 1.0
augment, crop_scale = "light", 0.5
loss, label_smoothing = "CE", 0.1
monitor = "val_acc"
cache = "auto"  # on a GPU: images resident there when they fit in half its free memory, else decoded by the workers
# layer_decay = 0.85  # not in the original set-up: lower LRs for the early blocks (timm's layer grouping)
