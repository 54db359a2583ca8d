"""Explaining a model: GradCAM on hooks, its figures and the cam command."""
