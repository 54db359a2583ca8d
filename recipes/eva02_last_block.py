# 3rd place of the ImageNet-Sketch competition (0.936): the same EVA02-L backbone frozen except its last block
# and the head, two learning rates (1e-4 for the block, 1e-3 for the head), AdamW, 5 folds and TTA.
#   python train.py recipes/eva02_last_block.py pretrained=False --dry-run
#   torchrun --nproc_per_node=4 train.py recipes/eva02_last_block.py && python predict.py --kfold --tta
model = "eva02_large_patch14_448.mim_m38m_ft_in22k_in1k"
pretrained = True
num_classes = 500
data_dir, train_csv = "data/train", "data/train.csv"
test_dir, test_csv = "data/test", "data/test.csv"
image_size, batch_size, epochs = 448, 32, 10
folds = 5
freeze = 1  # timm's last layer group (the last transformer block) and the top group (fc_norm + head) train
optimizer, lr, weight_decay = "AdamW", 1e-4, 0.05
head_lr_scale = 10.0  # 1e-3 for the head
warmup_epochs = 1
grad_checkpointing = False  # one trainable block: activations of the frozen ones are not kept anyway
augment, crop_scale = "light", 0.5
loss, label_smoothing = "CE", 0.1
monitor = "val_acc"
cache = "auto"  # on a GPU: images resident there when they fit in half its free memory, else decoded by the workers
# init_head = "imagenet"  # not in the original set-up: start the head from the ImageNet-1k rows of the classes
