"""Audio representations: waveform <-> latent frames (continuous) or tokens (discrete).

One protocol, :class:`Representation`; each concrete representation lives in its own module.
"""

from audioguide.representations.autoencoder import Autoencoder
from audioguide.representations.base import Representation
from audioguide.representations.encodec import Encodec
from audioguide.representations.frames import Frames

__all__ = ["Autoencoder", "Encodec", "Frames", "Representation"]
