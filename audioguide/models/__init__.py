"""Generator networks. Guidance never lives here: see :mod:`audioguide.guidance`."""

from audioguide.models.base import Generator, init_random
from audioguide.models.toy import ToyFlow

__all__ = ["Generator", "ToyFlow", "init_random"]
