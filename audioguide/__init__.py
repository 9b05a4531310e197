"""audioguide: guidance-aware text-to-speech and text-to-audio.

Public API (imported lazily, so ``import audioguide`` is cheap and has no side effects)::

    from audioguide import Pipeline, Guidance, load_recipe
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Audio", "AudioguideError", "Guidance", "Pipeline", "Recipe", "load_recipe"]

_LAZY = {
    "Audio": "audioguide.core",
    "AudioguideError": "audioguide.core",
    "Guidance": "audioguide.guidance",
    "Pipeline": "audioguide.pipeline",
    "Recipe": "audioguide.recipes",
    "load_recipe": "audioguide.recipes",
}

if TYPE_CHECKING:
    from audioguide.core import Audio, AudioguideError
    from audioguide.guidance import Guidance
    from audioguide.pipeline import Pipeline
    from audioguide.recipes import Recipe, load_recipe


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'audioguide' has no attribute {name!r}")
