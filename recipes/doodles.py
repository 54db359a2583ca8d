# Small drawings: 28-64 px, tens of classes, thousands of images (doodles, handwritten symbols, MNIST-like),
# dark on light or light on dark: background = "auto" measures the paper colour and fills with it.
# Chosen by measurement (bench/small_inputs.py, bench/README.md "Small drawings on real data"): resnet10t upsampled
# to 48 px (last map 2x2), 18 epochs, ~4.5 minutes on 2 CPU cores: MNIST-5k 0.988 light on dark and 0.989 dark on
# light (mean of 3 seeds), scikit-learn's digits at 28 px 0.999 / 0.998; a two-conv-layer CNN: 0.968 / 0.970.
# It beat resnet18 at 32 px, resnet10t at 64 px, a narrow ResNet with small_input_stem at 28 px, convnext_atto and
# efficientnet_b0 at 64 px within the same 5 minutes. For half the time: model = "test_resnet", epochs = 24 (timm's
# 0.37M-parameter narrow ResNet: 0.990 / 0.990 on MNIST-5k in ~2 minutes; tied, but a model made for tests).
# flip = "none": digits and letters change class in a mirror (MNIST-5k: 0.978 with "h", 0.952 with "hv").
# Doodles of things that can face either way gain from flip = "h"; the explore report's "mirror check" line
# measures it on your data.
model = "resnet10t"
data_dir, train_csv = "data/train", "data/train.csv"
test_dir, test_csv = "data/test", "data/test.csv"
image_size, batch_size, epochs = 48, 64, 18
optimizer, lr, weight_decay = "AdamW", 2e-3, 0.05
warmup_epochs = 1
augment = "light"
crop_scale = 0.6  # a drawing cropped to a third of its area is often another class
flip = "none"
background = "auto"
