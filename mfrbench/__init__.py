"""mfrbench: an end-to-end benchmark suite for masked-face recognition.

Core library (data, alignment, manifests, metrics, reports, CLI). Generator backends live in
``mfrbench.generators`` (top-level folder ``generators/``), recognizers in
``mfrbench.recognizers`` (folder ``recognizers/``).
"""

__version__ = "0.1.0"

import os as _os

# OpenCV 5 prints a harmless "setPreferableTarget ... new graph engine" warning per process
# when YuNet loads; keep real errors, drop that noise (users can override the variable).
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
