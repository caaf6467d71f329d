//! The detector's test-time transforms (maskrcnn-benchmark `data/transforms`: `Resize`,
//! `ToTensor`, `Normalize(to_bgr255=True)`): shortest side to `min_size_test` unless the
//! longest would pass `max_size_test`, Pillow's bilinear resize, then BGR on the 0..255 scale
//! minus the pixel mean, as a `[1, 3, h, w]` tensor. Batch size one: no padding.

use crate::config::DetectorConfig;
use crate::error::Result;
use crate::picture::RgbImage;
use crate::resize::resize_bilinear;
use candle_core::{Device, Tensor};

/// `Resize.get_size`: the `(width, height)` the reference resizes a `w × h` image to.
pub fn target_size(w: usize, h: usize, min_size: usize, max_size: usize) -> (usize, usize) {
    let mut size = min_size as f64;
    let (lo, hi) = (w.min(h) as f64, w.max(h) as f64);
    if hi / lo * size > max_size as f64 {
        // Python's round(): half to even.
        size = (max_size as f64 * lo / hi).round_ties_even();
    }
    let size_i = size as usize;
    if (w <= h && w == size_i) || (h <= w && h == size_i) {
        return (w, h);
    }
    if w < h {
        (size_i, (size * h as f64 / w as f64) as usize)
    } else {
        ((size * w as f64 / h as f64) as usize, size_i)
    }
}

/// What the backbone reads, and the sizes needed to map boxes back.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `[1, 3, h, w]`, BGR minus the mean.
    pub tensor: Tensor,
    /// The resized image (the coordinates the detector's boxes are in).
    pub resized: RgbImage,
    /// The decoded image's `(width, height)`.
    pub original_size: (usize, usize),
}

impl Prepared {
    pub fn resized_size(&self) -> (usize, usize) {
        (self.resized.width, self.resized.height)
    }
}

/// Resize and normalise. The arithmetic is the reference's in f32:
/// `u8 / 255 * 255 - mean` (not always exactly `u8 - mean`).
pub fn prepare(img: &RgbImage, cfg: &DetectorConfig) -> Result<Prepared> {
    let (ow, oh) = target_size(img.width, img.height, cfg.min_size_test, cfg.max_size_test);
    if ow == 0 || oh == 0 {
        return Err(crate::error::Error::Invalid(format!(
            "a {}×{} image is too elongated: resized to fit {}/{} it would be {ow}×{oh} pixels",
            img.width, img.height, cfg.min_size_test, cfg.max_size_test
        )));
    }
    let resized = resize_bilinear(img, ow, oh);
    let tensor = normalize(&resized, cfg.pixel_mean)?;
    Ok(Prepared {
        tensor,
        resized,
        original_size: (img.width, img.height),
    })
}

/// `ToTensor` + `Normalize(to_bgr255=True, std=1)` of an RGB image.
pub fn normalize(img: &RgbImage, mean_bgr: [f32; 3]) -> Result<Tensor> {
    let plane = img.width * img.height;
    let mut data = vec![0f32; 3 * plane];
    for (p, px) in img.data.chunks_exact(3).enumerate() {
        for (c_out, c_in) in [2usize, 1, 0].into_iter().enumerate() {
            let v = f32::from(px[c_in]) / 255.0 * 255.0;
            data[c_out * plane + p] = v - mean_bgr[c_out];
        }
    }
    Ok(Tensor::from_vec(
        data,
        (1, 3, img.height, img.width),
        &Device::Cpu,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_sizes_follow_the_reference_examples() {
        // detector-spec §2.1's worked examples (w × h).
        assert_eq!(target_size(640, 480, 600, 1000), (800, 600));
        assert_eq!(target_size(1920, 1080, 600, 1000), (999, 562));
        assert_eq!(target_size(333, 500, 600, 1000), (600, 900));
        assert_eq!(target_size(600, 900, 600, 1000), (600, 900));
    }

    #[test]
    fn an_image_too_thin_to_resize_is_an_error_not_a_panic() {
        let img = RgbImage::new(1, 3000, vec![9; 3000 * 3]).unwrap();
        let err = prepare(&img, &DetectorConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1×3000") && err.contains("too elongated"),
            "{err}"
        );
    }
}
