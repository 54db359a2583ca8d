# EfficientNet-B0: the fast recipe; fits a small GPU at 224 px and trains ~3x faster than ResNeXt-50.
from recipes.resnext import *  # noqa: F401,F403

model = "efficientnet_b0"
drop_path = 0.1
lr = 1e-3
batch_size = 128
