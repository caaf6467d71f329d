//! Pillow's `Image.resize(size, BILINEAR)` on 8-bit RGB, bit for bit: the image the reference's
//! `torchvision.transforms.functional.resize(pil_image, (h, w))` hands the detector.
//! Pillow (`src/libImaging/Resample.c`) uses an antialiased triangle filter whose support grows
//! with the reduction factor, coefficients normalised per output pixel and converted to fixed
//! point with 22 fractional bits, the horizontal pass first into an 8-bit intermediate that
//! holds only the rows the vertical pass reads, then the vertical pass. A plain bilinear
//! interpolation differs by up to tens of grey levels when shrinking.

use crate::picture::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One output pixel's input window: `[start, start+len)` and its fixed-point weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for the box `[0, in_size)`.
fn coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 1.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's `(int)` truncates toward zero; the operands here are ≥ -0.5 + small.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let len = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(len) {
            let w = triangle((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for x in 0..ksize {
            let v = if x < len && ww != 0.0 { k[x] / ww } else { 0.0 };
            let fixed = v * f64::from(1u32 << PRECISION_BITS);
            weights[xx * ksize + x] = if v < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((xmin, len));
    }
    Coeffs {
        bounds,
        ksize,
        weights,
    }
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS) << 8 {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resizes to `out_w × out_h` exactly as Pillow's BILINEAR filter does (Pillow ≤ 12.1, which
/// always runs the horizontal pass first; 12.2 and later may start with the vertical one).
/// A zero width or height gives an empty image.
pub fn resize_bilinear(img: &RgbImage, out_w: usize, out_h: usize) -> RgbImage {
    if out_w == 0 || out_h == 0 || img.width == 0 || img.height == 0 {
        return RgbImage {
            width: out_w,
            height: out_h,
            data: vec![0; out_w * out_h * 3],
        };
    }
    if out_w == img.width && out_h == img.height {
        return img.clone();
    }
    let horiz = coeffs(img.width, out_w);
    let vert = coeffs(img.height, out_h);
    let need_h = out_w != img.width;
    let need_v = out_h != img.height;
    // The horizontal pass only covers the rows the vertical pass will read.
    let first = vert.bounds[0].0;
    let last = vert.bounds[out_h - 1].0 + vert.bounds[out_h - 1].1;
    let (tmp, tmp_w, row0) = if need_h {
        let rows = last - first;
        let mut tmp = vec![0u8; out_w * rows * 3];
        for y in 0..rows {
            let src = &img.data[(y + first) * img.width * 3..(y + first + 1) * img.width * 3];
            let dst = &mut tmp[y * out_w * 3..(y + 1) * out_w * 3];
            for (xx, &(xmin, len)) in horiz.bounds.iter().enumerate() {
                let k = &horiz.weights[xx * horiz.ksize..xx * horiz.ksize + len];
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (x, &w) in k.iter().enumerate() {
                        ss += i64::from(src[(x + xmin) * 3 + c]) * i64::from(w);
                    }
                    dst[xx * 3 + c] = clip8(ss);
                }
            }
        }
        (tmp, out_w, first)
    } else {
        (img.data.clone(), img.width, 0)
    };
    if !need_v {
        return RgbImage {
            width: out_w,
            height: out_h,
            data: tmp,
        };
    }
    let mut out = vec![0u8; out_w * out_h * 3];
    for (yy, &(ymin, len)) in vert.bounds.iter().enumerate() {
        let k = &vert.weights[yy * vert.ksize..yy * vert.ksize + len];
        let dst = &mut out[yy * out_w * 3..(yy + 1) * out_w * 3];
        for (i, d) in dst.iter_mut().enumerate() {
            let mut ss: i64 = 1 << (PRECISION_BITS - 1);
            for (y, &w) in k.iter().enumerate() {
                ss += i64::from(tmp[(y + ymin - row0) * tmp_w * 3 + i]) * i64::from(w);
            }
            *d = clip8(ss);
        }
    }
    RgbImage {
        width: out_w,
        height: out_h,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_a_copy_and_constant_images_stay_constant() {
        let img = RgbImage::new(7, 5, vec![200; 7 * 5 * 3]).unwrap();
        assert_eq!(resize_bilinear(&img, 7, 5), img);
        for (w, h) in [(3, 2), (20, 9), (7, 11), (1, 1)] {
            let r = resize_bilinear(&img, w, h);
            assert_eq!((r.width, r.height), (w, h));
            assert!(r.data.iter().all(|&v| v == 200), "{w}×{h}");
        }
    }
}
