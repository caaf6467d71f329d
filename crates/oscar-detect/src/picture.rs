//! Image files in: decoding to 8-bit RGB the way VinVL's extraction route sees them.
//! scene_graph_benchmark's `tools/mini_tsv/tsv_demo.py` reads every picture with
//! `cv2.imread(path)` (colour, EXIF orientation applied, alpha dropped, 16-bit scaled by taking
//! the high byte, grey replicated to three channels) before the detector's transforms; this
//! module does the same with the `image` crate (JPEG and PNG).

use crate::error::{Error, Result};
use image::{DynamicImage, ImageDecoder, ImageReader};
use std::io::Cursor;
use std::path::Path;

/// A decoded picture: `width × height` pixels, RGB interleaved, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        if data.len() != width * height * 3 {
            return Err(Error::Invalid(format!(
                "an RGB image of {width}×{height} needs {} bytes, got {}",
                width * height * 3,
                data.len()
            )));
        }
        Ok(RgbImage {
            width,
            height,
            data,
        })
    }
}

/// Decodes an image file (JPEG or PNG, by content, not by name). `max_pixels` (0 = none)
/// is checked from the header, before any pixel is decoded.
pub fn read_image(path: &Path, max_pixels: u64) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes, max_pixels).map_err(|msg| Error::bad_file(path, msg))
}

/// [`read_image`] on bytes already in memory (an upload); the error is a sentence.
pub fn decode_image(bytes: &[u8], max_pixels: u64) -> std::result::Result<RgbImage, String> {
    if bytes.is_empty() {
        return Err("empty file: no image".into());
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    if reader.format().is_none() {
        return Err("not an image this detector reads (JPEG or PNG expected)".into());
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| format!("not a readable image: {e}"))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(format!("the image is {w}×{h} pixels: nothing to detect"));
    }
    if max_pixels > 0 && u64::from(w) * u64::from(h) > max_pixels {
        return Err(format!(
            "the image is {w}×{h} = {} pixels, above the limit of {max_pixels} (max_image_pixels in detector.json)",
            u64::from(w) * u64::from(h)
        ));
    }
    let orientation = decoder
        .orientation()
        .map_err(|e| format!("bad EXIF orientation: {e}"))?;
    let jpeg = matches!(
        decoder.original_color_type(),
        image::ExtendedColorType::L8 | image::ExtendedColorType::Rgb8
    ) && bytes.starts_with(&[0xFF, 0xD8]);
    let mut img = if jpeg {
        let rgb = decode_jpeg(bytes)?;
        let buf = image::RgbImage::from_raw(rgb.width as u32, rgb.height as u32, rgb.data)
            .ok_or("the JPEG decoder returned a short image")?;
        DynamicImage::ImageRgb8(buf)
    } else {
        DynamicImage::from_decoder(decoder)
            .map_err(|e| format!("truncated or corrupt image: {e}"))?
    };
    img.apply_orientation(orientation);
    Ok(to_rgb8(img))
}

/// A JPEG's pixels as libjpeg-turbo gives them with its defaults (what `cv2.imread` returns):
/// the accurate integer IDCT and fancy upsampling, converted to RGB. A file cut short is an
/// error here (libjpeg itself would only warn and pad it with grey).
fn decode_jpeg(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let end = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    if !matches!((last_scan, end), (Some(s), Some(e)) if e > s) {
        return Err("truncated JPEG: no end-of-image marker after the last scan".into());
    }
    // libjpeg reports fatal errors by unwinding out of the C code (mozjpeg's error manager
    // uses `resume_unwind`, so no panic message is printed); catch it as an error.
    let run = || -> std::io::Result<RgbImage> {
        let d = mozjpeg::Decompress::new_mem(bytes)?;
        let mut started = d.rgb()?;
        let (width, height) = (started.width(), started.height());
        let data: Vec<u8> = started.read_scanlines()?;
        started.finish()?;
        RgbImage::new(width, height, data).map_err(|e| std::io::Error::other(e.to_string()))
    };
    match std::panic::catch_unwind(run) {
        Ok(Ok(img)) => Ok(img),
        Ok(Err(e)) => Err(format!("corrupt JPEG: {e}")),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg failed".into());
            Err(format!("corrupt JPEG: {msg}"))
        }
    }
}

/// OpenCV's `IMREAD_COLOR` conversion: 16-bit samples keep their high byte, alpha is dropped
/// (not composited), grey is copied to R, G and B.
fn to_rgb8(img: DynamicImage) -> RgbImage {
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data = match img {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageLuma8(b) => b.into_raw().iter().flat_map(|&v| [v, v, v]).collect(),
        DynamicImage::ImageLumaA8(b) => b
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [p[0]; 3])
            .collect(),
        DynamicImage::ImageRgba8(b) => b
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        DynamicImage::ImageLuma16(b) => b
            .into_raw()
            .iter()
            .flat_map(|&v| [(v >> 8) as u8; 3])
            .collect(),
        DynamicImage::ImageLumaA16(b) => b
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [(p[0] >> 8) as u8; 3])
            .collect(),
        DynamicImage::ImageRgb16(b) => b.into_raw().iter().map(|&v| (v >> 8) as u8).collect(),
        DynamicImage::ImageRgba16(b) => b
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
            .collect(),
        other => other.to_rgb8().into_raw(),
    };
    RgbImage {
        width,
        height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([10, 20, 30]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn the_pixel_limit_is_checked_from_the_header_and_named() {
        let bytes = png(40, 30);
        assert_eq!(decode_image(&bytes, 0).unwrap().data[..3], [10, 20, 30]);
        let err = decode_image(&bytes, 1000).unwrap_err();
        assert!(
            err.contains("40×30 = 1200 pixels") && err.contains("limit of 1000"),
            "{err}"
        );
    }

    #[test]
    fn empty_non_image_and_cut_files_are_sentences_not_panics() {
        assert!(decode_image(b"", 0).unwrap_err().contains("empty"));
        assert!(decode_image(b"GIF89a not really", 0).is_err());
        let bytes = png(64, 64);
        assert!(decode_image(&bytes[..bytes.len() / 2], 0).is_err());
        assert!(decode_image(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 16], 0).is_err());
    }
}
