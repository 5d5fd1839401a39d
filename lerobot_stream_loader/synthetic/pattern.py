"""Frame content and row values of the sample dataset.

Every video frame carries its global frame ``index`` in pixels: 16 bits, most significant first,
drawn as 16 equal-width vertical bands over the top half of the image (white = 1, black = 0).
The bottom half holds smooth moving shapes over a drifting colour gradient with a mild texture,
so that encoders spend a realistic number of bits without the content looking like noise.
"""

from __future__ import annotations

import numpy as np

INDEX_BITS = 16
MAX_INDEX = (1 << INDEX_BITS) - 1
MIN_WIDTH = 64
MIN_HEIGHT = 48

_STATE_RATE = 0.05
_STATE_PHASE = 0.9
_ACTION_RATE = 0.03
_ACTION_PHASE = 1.3
_ACTION_AMPLITUDE = 0.5
_GRATINGS = 16
_TEXTURE_AMPLITUDE = 40.0
# (kx, ky, angular speed, phase) of the red, green and blue drifting gradients.
_GRADIENTS = ((0.8, 0.3, -1.0, 0.0), (0.2, -0.9, 0.7, 1.0), (0.5, 0.5, -1.3, np.pi / 2))


def band_edges(width: int) -> list[tuple[int, int]]:
    """Pixel columns ``[x0, x1)`` of the 16 bit bands for an image ``width`` wide."""
    return [((i * width) // INDEX_BITS, ((i + 1) * width) // INDEX_BITS) for i in range(INDEX_BITS)]


def state_matrix(indices: np.ndarray, dim: int) -> np.ndarray:
    """``observation.state`` rows of frames ``indices``: ``sin(0.05 * index + 0.9 * j)``, float32."""
    j = np.arange(dim, dtype=np.float64)[None, :]
    return np.sin(_STATE_RATE * indices.astype(np.float64)[:, None] + _STATE_PHASE * j).astype(np.float32)


def action_matrix(indices: np.ndarray, dim: int) -> np.ndarray:
    """``action`` rows of frames ``indices``: ``0.5 * cos(0.03 * index + 1.3 * j)``, float32."""
    j = np.arange(dim, dtype=np.float64)[None, :]
    angle = _ACTION_RATE * indices.astype(np.float64)[:, None] + _ACTION_PHASE * j
    return (_ACTION_AMPLITUDE * np.cos(angle)).astype(np.float32)


class FrameRenderer:
    """Draws the frames of one camera; precomputes what does not depend on the frame."""

    def __init__(self, width: int, height: int, camera: int) -> None:
        if width < MIN_WIDTH or height < MIN_HEIGHT:
            raise ValueError(f"frame size {width}x{height} is below the minimum {MIN_WIDTH}x{MIN_HEIGHT}")
        self.width = width
        self.height = height
        self.camera = camera
        self._top = height // 2
        bottom = height - self._top
        self._x = np.arange(width, dtype=np.float32) / width
        self._y = np.arange(bottom, dtype=np.float32) / bottom
        rng = np.random.default_rng(1000 + camera)
        # Mild texture: sixteen fine sinusoidal gratings (2.5 to 25 cycles per 100 pixels).
        ys, xs = np.mgrid[0:bottom, 0:width].astype(np.float32)
        texture = np.zeros((bottom, width), np.float32)
        for _ in range(_GRATINGS):
            fx, fy = rng.uniform(0.025, 0.25, size=2) * rng.choice([-1.0, 1.0], size=2)
            texture += np.sin(2 * np.pi * (fx * xs + fy * ys) + rng.uniform(0, 2 * np.pi))
        self._texture = texture * np.float32(_TEXTURE_AMPLITUDE / np.sqrt(_GRATINGS))
        self._colors = rng.uniform(30, 225, size=(4, 3)).astype(np.float32)
        self._phases = rng.uniform(0, 2 * np.pi, size=(4, 2))
        self._bands = band_edges(width)
        # Horizontal halves of the drifting gradients sin(2 pi (kx x + ky y) + w t + phase), one per channel.
        self._gradient_x = [(np.sin(2 * np.pi * kx * self._x), np.cos(2 * np.pi * kx * self._x))
                            for kx, _, _, _ in _GRADIENTS]

    def render(self, index: int) -> np.ndarray:
        """The RGB frame (H, W, 3) uint8 of global frame ``index``."""
        if not 0 <= index <= MAX_INDEX:
            raise ValueError(f"frame index {index} does not fit in {INDEX_BITS} bits")
        frame = np.empty((self.height, self.width, 3), np.uint8)
        top = frame[: self._top]
        for bit, (x0, x1) in enumerate(self._bands):
            top[:, x0:x1] = 255 if (index >> (INDEX_BITS - 1 - bit)) & 1 else 0
        frame[self._top :] = self._bottom(index)
        return frame

    def _bottom(self, index: int) -> np.ndarray:
        t = index * 0.08 + self.camera * 1.7
        texture = np.roll(self._texture, (2 * index) % self.width, axis=1)
        image = np.empty((len(self._y), self.width, 3), np.float32)
        for channel, ((_, ky, speed, phase), (sin_x, cos_x)) in enumerate(
            zip(_GRADIENTS, self._gradient_x, strict=True)
        ):
            angle_y = 2 * np.pi * ky * self._y + speed * t + phase
            wave = np.outer(np.sin(angle_y), cos_x) + np.outer(np.cos(angle_y), sin_x)
            image[..., channel] = 128 + 70 * wave + texture
        for k, color in enumerate(self._colors):
            self._draw_disc(image, index, k, color)
        return np.clip(image, 0, 255).astype(np.uint8)

    def _draw_disc(self, image: np.ndarray, index: int, k: int, color: np.ndarray) -> None:
        """Blend disc ``k`` (soft edge) into ``image``, touching only its bounding box."""
        cx = 0.5 + 0.38 * np.sin(0.11 * index * (k + 1) / 2 + self._phases[k, 0])
        cy = 0.5 + 0.38 * np.cos(0.07 * index * (k + 2) / 2 + self._phases[k, 1])
        radius = 0.12 + 0.04 * k
        reach_x, reach_y = (radius + 0.03) / 1.4, radius + 0.03
        xa, xb = np.searchsorted(self._x, [cx - reach_x, cx + reach_x])
        ya, yb = np.searchsorted(self._y, [cy - reach_y, cy + reach_y])
        if xa >= xb or ya >= yb:
            return
        dx = (self._x[xa:xb] - cx) * 1.4
        dy = self._y[ya:yb] - cy
        weight = np.clip((radius - np.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)) * 40.0, 0.0, 1.0)[..., None]
        box = image[ya:yb, xa:xb]
        box += (color - box) * weight


def read_index_from_luma(luma: np.ndarray, *, strict: bool = True) -> int:
    """Decode the 16-bit index from a luminance image (H, W) with values in [0, 1]."""
    height, width = luma.shape
    y0, y1 = height // 8, max(height // 8 + 1, (3 * height) // 8)
    value = 0
    for bit, (x0, x1) in enumerate(band_edges(width)):
        margin = (x1 - x0) // 4
        level = float(luma[y0:y1, x0 + margin : max(x0 + margin + 1, x1 - margin)].mean())
        if strict and 0.3 < level < 0.7:
            raise ValueError(f"bit band {bit} has mean level {level:.3f}: the frame carries no clear index")
        value = (value << 1) | (1 if level >= 0.5 else 0)
    return value
