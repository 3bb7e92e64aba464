"""Reconstruction metrics on NumPy videos in [0, 1]: PSNR and SSIM (Wang et al. 2004, 11x11 Gaussian, sigma 1.5)."""
import numpy as np
from scipy.ndimage import gaussian_filter


def psnr(x, y, data_range=1.0):
    """Peak signal-to-noise ratio in dB over all elements (inf for identical inputs)."""
    mse = np.mean((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))


def ssim(x, y, data_range=1.0):
    """Mean SSIM of (..., H, W) arrays, each 2-D slice (frame, channel) on its own; Gaussian window, K1=.01, K2=.03."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    sigma = [0] * (x.ndim - 2) + [1.5, 1.5]

    def blur(a):
        return gaussian_filter(a, sigma, truncate=3.5, mode="reflect")  # 3.5 sigma: the 11x11 window

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())
