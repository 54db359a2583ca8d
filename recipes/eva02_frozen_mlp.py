# 1st place of the ImageNet-Sketch competition (about 0.94 accuracy): EVA02-L at 448 px with the whole backbone
# frozen and only a new MLP head trained (Adam 1e-3, step decay), augmentation switched on in stages, 5-fold soft
# vote, vertical flips too.
#   python train.py recipes/eva02_frozen_mlp.py pretrained=False --dry-run     # offline check of the groups
#   torchrun --nproc_per_node=4 train.py recipes/eva02_frozen_mlp.py && python predict.py --kfold --tta
model = "eva02_large_patch14_448.mim_m38m_ft_in22k_in1k"
pretrained = True
num_classes = 500  # the competition's classes (also lets --dry-run run without the data)
data_dir, train_csv = "data/train", "data/train.csv"
test_dir, test_csv = "data/test", "data/test.csv"
image_size, batch_size, epochs = 448, 64, 10
folds = 5
freeze = "backbone"  # only the head trains: the frozen backbone runs in eval mode and keeps no optimizer state
head, head_hidden, head_dropout = "mlp", 1024, 0.2
flip = "hv"  # sketches have no fixed up: vertical flips helped; predict.py --tta averages the same 4 views
optimizer, lr, weight_decay = "AdamW", 1e-3, 0.0  # AdamW without weight decay is Adam
warmup_epochs = 0.5
scheduler, step_milestones, step_gamma = "step", (6, 9), 0.1  # the LR drops tenfold after epochs 6 and 9
augment_schedule = {0: "none", 3: "light"}  # crops and flips alone at first, light affine too from the 4th epoch
crop_scale = 0.5
loss, label_smoothing = "CE", 0.1
monitor = "val_acc"
cache = "disk"
