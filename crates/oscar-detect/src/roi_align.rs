//! Legacy ROIAlign (maskrcnn-benchmark `csrc/cpu/ROIAlign_cpu.cpp`; torchvision's `roi_align`
//! with `aligned=False`): no half-pixel offset, regions at least 1×1 feature cells, an
//! adaptive `⌈size/out⌉` sampling grid per bin, bilinear samples averaged. The arithmetic order
//! follows the C++ so the f32 results agree to the last bits.

use crate::boxes::Box4;
use crate::error::Result;
use candle_core::{Device, Tensor};

/// One bilinear sample: four cell offsets and weights (all zero outside the map).
#[derive(Clone, Copy, Default)]
struct Sample {
    idx: [usize; 4],
    w: [f32; 4],
}

fn sample(h: usize, w: usize, mut y: f32, mut x: f32) -> Sample {
    if y < -1.0 || y > h as f32 || x < -1.0 || x > w as f32 {
        return Sample::default();
    }
    if y <= 0.0 {
        y = 0.0;
    }
    if x <= 0.0 {
        x = 0.0;
    }
    let mut y_low = y as usize;
    let mut x_low = x as usize;
    let y_high;
    let x_high;
    if y_low >= h - 1 {
        y_low = h - 1;
        y_high = h - 1;
        y = y_low as f32;
    } else {
        y_high = y_low + 1;
    }
    if x_low >= w - 1 {
        x_low = w - 1;
        x_high = w - 1;
        x = x_low as f32;
    } else {
        x_high = x_low + 1;
    }
    let ly = y - y_low as f32;
    let lx = x - x_low as f32;
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    Sample {
        idx: [
            y_low * w + x_low,
            y_low * w + x_high,
            y_high * w + x_low,
            y_high * w + x_high,
        ],
        w: [hy * hx, hy * lx, ly * hx, ly * lx],
    }
}

/// Pools each box (in image pixels) from `features` `[1, C, H, W]` into `[R, C, out, out]`.
pub fn roi_align(
    features: &Tensor,
    boxes: &[Box4],
    out: usize,
    spatial_scale: f32,
) -> Result<Tensor> {
    let (_, c, h, w) = features.dims4()?;
    let data: Vec<f32> = features.flatten_all()?.to_vec1()?;
    let plane = h * w;
    let per_roi = c * out * out;
    let mut result = vec![0f32; boxes.len() * per_roi];
    let work = |(b, dst): (&Box4, &mut [f32])| {
        let sx1 = b[0] * spatial_scale;
        let sy1 = b[1] * spatial_scale;
        let sx2 = b[2] * spatial_scale;
        let sy2 = b[3] * spatial_scale;
        let rw = (sx2 - sx1).max(1.0);
        let rh = (sy2 - sy1).max(1.0);
        let bw = rw / out as f32;
        let bh = rh / out as f32;
        let gw = (rw / out as f32).ceil() as usize;
        let gh = (rh / out as f32).ceil() as usize;
        let count = (gw * gh).max(1) as f32;
        // The samples of every bin, shared by all channels.
        let mut samples = Vec::with_capacity(out * out * gw * gh);
        for ph in 0..out {
            for pw in 0..out {
                for iy in 0..gh {
                    let y = sy1 + ph as f32 * bh + (iy as f32 + 0.5) * bh / gh as f32;
                    for ix in 0..gw {
                        let x = sx1 + pw as f32 * bw + (ix as f32 + 0.5) * bw / gw as f32;
                        samples.push(sample(h, w, y, x));
                    }
                }
            }
        }
        let per_bin = gw * gh;
        for ch in 0..c {
            let map = &data[ch * plane..(ch + 1) * plane];
            let o = &mut dst[ch * out * out..(ch + 1) * out * out];
            for (bin, ov) in o.iter_mut().enumerate() {
                let mut acc = 0f32;
                for s in &samples[bin * per_bin..(bin + 1) * per_bin] {
                    acc += s.w[0] * map[s.idx[0]]
                        + s.w[1] * map[s.idx[1]]
                        + s.w[2] * map[s.idx[2]]
                        + s.w[3] * map[s.idx[3]];
                }
                *ov = acc / count;
            }
        }
    };
    let threads = candle_core::utils::get_num_threads().max(1);
    let chunk = boxes.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (bs, dst) in boxes.chunks(chunk).zip(result.chunks_mut(chunk * per_roi)) {
            scope.spawn(move || bs.iter().zip(dst.chunks_mut(per_roi)).for_each(work));
        }
    });
    Ok(Tensor::from_vec(
        result,
        (boxes.len(), c, out, out),
        &Device::Cpu,
    )?)
}
