# ConvNeXt-Tiny on the sketch competition data: a stronger, slower alternative to ResNeXt-50.
from recipes.resnext import *  # noqa: F401,F403  (data, folds and mixing as in the ResNeXt recipe)

model = "convnext_tiny"
drop_path = 0.1
lr, weight_decay = 2e-4, 0.05
batch_size = 48
ema_decay = 0.9998
augment = "trivialaugment"
