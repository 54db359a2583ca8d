# Small drawings: 28-64 px, tens of classes, thousands of images (doodles, handwritten symbols, MNIST-like),
# dark on light or light on dark: background = "auto" measures the paper colour and fills with it.
# Chosen by measurement (bench/doodles.py, bench/README.md): on light-on-dark digits this beat augment="none",
# "trivialaugment" and 48 px for 8 epochs at the same cost (~150 CPU-seconds, about a minute on 2 quiet cores).
# The warning that resnet18's last map is 1x1 at 32 px is true; at this budget 48 px did not do better.
model = "resnet18"
data_dir, train_csv = "data/train", "data/train.csv"
test_dir, test_csv = "data/test", "data/test.csv"
image_size, batch_size, epochs = 32, 64, 12
optimizer, lr, weight_decay = "AdamW", 2e-3, 0.05
warmup_epochs = 1
augment = "light"
crop_scale = 0.6  # a drawing cropped to a third of its area is often another class
background = "auto"
