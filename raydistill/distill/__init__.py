"""Distillation: image modifiers (the gradient shift), clustering backends and selection methods."""
