"""Shared test set-up: quiet TensorFlow and keep it to the two cores this suite is sized for."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
