"""Explaining a model: gradcam (GradCAM, GradCAM++, LayerCAM on hooks), figures (pages, the mistakes grid) and
command (cam.py's body)."""
