# Small drawings: 28-64 px, tens of classes, thousands of images (doodles, handwritten symbols, MNIST-like),
# dark on light or light on dark: `background = "auto"` measures the paper colour and fills with it.
# Chosen by measurement on the demo digits and the same digits inverted (bench/doodles.py, bench/README.md).
model = "resnet18"
image_size, batch_size, epochs = 32, 64, 12
optimizer, lr, weight_decay = "AdamW", 2e-3, 0.05
warmup_epochs = 1
augment = "light"
crop_scale = 0.6  # a drawing cropped to a third of its area is often another class
background = "auto"
