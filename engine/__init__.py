"""sketchbook: a small, readable PyTorch training engine for image classification."""
