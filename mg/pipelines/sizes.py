"""Output sizes: explicit height/width, or an aspect ratio and a resolution (the short side), checked against
what the TAE and the DiT's patches can represent."""
from typing import Optional


def parse_aspect_ratio(text: str) -> float:
    """"16:9" (or "16/9", "1.78") -> width / height."""
    try:
        parts = [float(p) for p in str(text).replace("/", ":").split(":")]
        ratio = parts[0] / parts[1] if len(parts) == 2 else (parts[0] if len(parts) == 1 else float("nan"))
    except (ValueError, ZeroDivisionError):
        ratio = float("nan")
    if not ratio > 0 or ratio == float("inf"):
        raise ValueError(f"aspect_ratio {text!r} is not a positive 'width:height' ratio such as '16:9'")
    return ratio


def resolve_size(height: Optional[int], width: Optional[int], aspect_ratio: Optional[str],
                 resolution: Optional[int], multiple: int) -> tuple:
    """(height, width) in pixels, both multiples of `multiple`.

    Explicit height and width win; otherwise the short side is `resolution` and the long side follows the aspect
    ratio, rounded to the nearest multiple (256 at 16:9 with multiple 16 -> 256 x 448).
    """
    if (height is None) != (width is None):
        raise ValueError("give both height and width, or neither (then aspect_ratio and resolution are used)")
    if height is None:
        if aspect_ratio is None or resolution is None:
            raise ValueError("give height and width, or aspect_ratio and resolution")
        if resolution < 1:
            raise ValueError(f"resolution must be positive, got {resolution}")
        ratio = parse_aspect_ratio(aspect_ratio)
        short, long = resolution, max(multiple, multiple * round(resolution * max(ratio, 1 / ratio) / multiple))
        height, width = (short, long) if ratio >= 1 else (long, short)
    for name, value in (("height", height), ("width", width)):
        if value < 1 or value % multiple:
            raise ValueError(f"{name}={value} must be a positive multiple of {multiple} (TAE compression x DiT patch)")
    return height, width
