"""Visual quality of toy videos, measured from the pixels: how sharp the shape's edges are, how flat the background
is, whether a square has corners, and how steady the shape's colour stays over the frames.

Every measure is of one uint8 (T, H, W, 3) video and uses the toy world's shape masks (mg.data.toy_world), so it
assumes what the renderer draws: one shape on a plain background. Clean renders give each measure's reference value.
"""
import cv2
import numpy as np

from mg.data.toy_world import shape_masks

_BAND = 3          # pixels on each side of the shape's outline that the edge measure looks at
_AWAY = 4          # pixels between the outline and the background the flatness measure reads
_ANGLES = 72       # samples of the outline's distance from the centre, one per 5 degrees
# Relative amplitudes of the outline's 3rd and 4th angular harmonics (distance from the centre against angle): an
# ideal square has 0.070 at the 4th, a circle 0; the toy triangle (as tall as wide) 0.136 at the 3rd. The thresholds
# sit at half those values: a square whose corners are rounded to a superellipse of power 4 still counts as a
# square, one of power 3 (closer to a circle than to a square) does not.
_SQUARE_HARMONIC = 0.035
_TRIANGLE_HARMONIC = 0.068


def _outline(mask):
    """The largest outer contour of a bool mask (N, 2) as x, y points, or None."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    return max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float64)


def _grow(mask, pixels):
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def _shrink(mask, pixels):
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.erode(mask.astype(np.uint8), kernel).astype(bool)


def edge_sharpness(frames, masks=None):
    """Median over frames of the squared colour gradient across the shape's outline, per pixel of outline and in
    units of the shape/background contrast: 1 / (edge width in pixels). A one-pixel step scores ~1 (more on
    diagonal edges); an edge ramped over w pixels ~1/w. NaN when no frame shows a shape with a clear inside."""
    frames = np.asarray(frames, np.float64)
    masks = shape_masks(frames) if masks is None else masks
    scores = []
    for frame, mask in zip(frames, masks):
        inside, outside = _shrink(mask, 2), ~_grow(mask, _AWAY)
        outline = _outline(mask)
        if outline is None or not inside.any() or not outside.any():
            continue
        contrast = np.sum((np.median(frame[inside], axis=0) - np.median(frame[outside], axis=0)) ** 2)
        band = _grow(mask, _BAND) & ~_shrink(mask, _BAND)
        dx = np.zeros(frame.shape[:2])
        dy = np.zeros(frame.shape[:2])
        dx[:, :-1] = np.sum(np.diff(frame, axis=1) ** 2, axis=-1)
        dy[:-1, :] = np.sum(np.diff(frame, axis=0) ** 2, axis=-1)
        length = cv2.arcLength(outline.astype(np.float32)[:, None, :], closed=True)
        scores.append(float((dx + dy)[band].sum() / (contrast * max(length, 1.0))))
    return float(np.median(scores)) if scores else float("nan")


def background_spread(frames, masks=None):
    """Median over frames of the standard deviation of the background's pixels (RGB channels averaged, uint8 units),
    read away from the shape: 0 for a flat background."""
    frames = np.asarray(frames, np.float64)
    masks = shape_masks(frames) if masks is None else masks
    spreads = [float(np.mean(np.std(frame[~_grow(mask, _AWAY)], axis=0))) for frame, mask in zip(frames, masks)]
    return float(np.median(spreads))


def colour_drift(frames, masks=None):
    """How much the shape's colour moves over the frames: the RGB length of the per-channel standard deviation of
    its median colour per frame (uint8 units; 0 when steady, NaN with fewer than two frames showing it)."""
    frames = np.asarray(frames, np.float64)
    masks = shape_masks(frames) if masks is None else masks
    colours = [np.median(frame[_shrink(mask, 1) if _shrink(mask, 1).any() else mask], axis=0)
               for frame, mask in zip(frames, masks) if mask.any()]
    if len(colours) < 2:
        return float("nan")
    return float(np.linalg.norm(np.std(colours, axis=0)))


def outline_harmonics(mask):
    """(3rd, 4th) angular harmonics of the outline's distance from the shape's centroid, relative to the mean
    distance (NaN, NaN for an empty mask or one too small to have an outline)."""
    outline = _outline(mask)
    if outline is None or len(outline) < 8:
        return float("nan"), float("nan")
    ys, xs = np.nonzero(mask)
    offset = outline - np.array([xs.mean(), ys.mean()])
    angle = np.arctan2(offset[:, 1], offset[:, 0])
    order = np.argsort(angle)
    grid = np.linspace(-np.pi, np.pi, _ANGLES, endpoint=False)
    radius = np.interp(grid, angle[order], np.hypot(offset[:, 0], offset[:, 1])[order], period=2 * np.pi)
    spectrum = np.abs(np.fft.rfft(radius))
    return float(spectrum[3] / spectrum[0]), float(spectrum[4] / spectrum[0])


def classify_shape_by_corners(frames, masks=None):
    """square / circle / triangle from the outline's corners, not its fill: a triangle has three (a strong 3rd
    harmonic), a square four (a strong 4th), a circle none. Medians over frames;
    None if no frame shows a shape."""
    masks = shape_masks(frames) if masks is None else masks
    shown = [m for m in masks if m.any()]
    harmonics = np.array([outline_harmonics(m) for m in shown]).reshape(-1, 2)
    if not shown or np.isnan(harmonics).all():
        return None
    third, fourth = np.nanmedian(harmonics, axis=0)
    if third >= _TRIANGLE_HARMONIC:
        return "triangle"
    return "square" if fourth >= _SQUARE_HARMONIC else "circle"


QUALITY_MEASURES = ("edge_sharpness", "background_spread", "colour_drift")


def measure_quality(frames):
    """{edge_sharpness, background_spread, colour_drift, corner_shape} of one uint8 (T, H, W, 3) video."""
    masks = shape_masks(frames)
    return {"edge_sharpness": edge_sharpness(frames, masks), "background_spread": background_spread(frames, masks),
            "colour_drift": colour_drift(frames, masks), "corner_shape": classify_shape_by_corners(frames, masks)}

