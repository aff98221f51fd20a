"""Output metrics: SSIM and PSNR on images and videos."""
import math

import pytest
import torch

from smartcompile.metrics import psnr, ssim


def test_ssim_of_constant_images_is_the_luminance_term():
    # constant images have no variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * range)^2
    a, b = torch.full((1, 3, 16, 16), 0.2), torch.full((1, 3, 16, 16), -0.4)
    c1 = (0.01 * 2.0) ** 2
    assert ssim(a, b, data_range=2.0) == pytest.approx((2 * 0.2 * -0.4 + c1) / (0.2 ** 2 + 0.4 ** 2 + c1), rel=1e-9)


def test_ssim_is_one_on_itself_symmetric_and_falls_with_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 4, 24, 24, generator=g) * 2 - 1  # a video (B, C, T, H, W)
    noise = torch.randn(x.shape, generator=g)
    assert ssim(x, x) == pytest.approx(1.0)
    values = [ssim(x + s * noise, x) for s in (0.01, 0.05, 0.2)]
    assert values[0] > values[1] > values[2] and values[0] < 1
    assert ssim(x, x + 0.05 * noise) == pytest.approx(ssim(x + 0.05 * noise, x))


@pytest.mark.parametrize("a, b, message", [
    ((1, 3, 8, 8), (1, 3, 8, 8), "at least 11x11"),
    ((1, 3, 16, 16), (1, 3, 16, 17), "of one shape"),
    ((3, 16, 16), (3, 16, 16), "of one shape"),
])
def test_ssim_rejects_what_it_cannot_measure(a, b, message):
    with pytest.raises(ValueError, match=message):
        ssim(torch.zeros(a), torch.zeros(b))


def test_psnr_peak():
    ref = torch.zeros(100)
    ref[0] = 0.5
    out = ref + 0.01
    assert psnr(out, ref, peak=2.0) == pytest.approx(10 * math.log10(4 / 1e-4))
    assert psnr(out, ref) == pytest.approx(10 * math.log10(0.25 / 1e-4))  # default peak: max |ref|
    assert psnr(ref, ref) == math.inf
