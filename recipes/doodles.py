# Small drawings: 28-64 px, tens of classes, thousands of images (doodles, handwritten symbols, MNIST-like),
# dark on light or light on dark: background = "auto" measures the paper colour and fills with it.
# Chosen by measurement on MNIST-5k (bench/small_inputs.py, bench/README.md): resnet10t upsampled to 48 px
# (last map 2x2), 12 epochs: 0.985 on digits light-on-dark and dark-on-light (one seed), ~320 CPU-s (< 5 min on
# 2 cores); it beat the stride-1 stem (small_input_stem) on test_resnet at 28 px, 15 epochs (0.982) at that cost.
# flip = "none": digits and letters change class in a mirror. Doodles of things that can face either way gain
# from flip = "h"; the explore report's "mirror check" line measures it on your data.
model = "resnet10t"
data_dir, train_csv = "data/train", "data/train.csv"
test_dir, test_csv = "data/test", "data/test.csv"
image_size, batch_size, epochs = 48, 64, 12
optimizer, lr, weight_decay = "AdamW", 2e-3, 0.05
warmup_epochs = 1
augment = "light"
crop_scale = 0.6  # a drawing cropped to a third of its area is often another class
flip = "none"
background = "auto"
