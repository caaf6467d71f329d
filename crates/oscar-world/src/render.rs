//! Pictures of scenes for people: boxes in the object's colour with the category name, the
//! detector's tags and the first caption under it. Text uses the public-domain 8×8 bitmap font
//! (font8x8), so no system font is needed.

use crate::language::name;
use crate::scene::{Scene, CANVAS};
use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

const TILE_W: u32 = 320;
const TILE_H: u32 = 240;
const TEXT_H: u32 = 60;

fn rgb(colour: usize) -> Rgb<u8> {
    const C: [[u8; 3]; 8] = [
        [220, 40, 40],
        [40, 80, 220],
        [40, 170, 60],
        [230, 200, 30],
        [20, 20, 20],
        [250, 250, 250],
        [140, 90, 40],
        [245, 140, 20],
    ];
    Rgb(C[colour % 8])
}

fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, colour: Rgb<u8>) {
    for (k, ch) in s.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else {
            continue;
        };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let (px, py) = (x + k as u32 * 8 + col, y + row as u32);
                    if px < img.width() && py < img.height() {
                        img.put_pixel(px, py, colour);
                    }
                }
            }
        }
    }
}

fn rect(img: &mut RgbImage, x1: u32, y1: u32, x2: u32, y2: u32, c: Rgb<u8>) {
    for t in 0..2 {
        for x in x1..=x2.min(img.width() - 1) {
            for y in [y1 + t, y2.saturating_sub(t)] {
                if y < img.height() {
                    img.put_pixel(x, y, c);
                }
            }
        }
        for y in y1..=y2.min(img.height() - 1) {
            for x in [x1 + t, x2.saturating_sub(t)] {
                if x < img.width() {
                    img.put_pixel(x, y, c);
                }
            }
        }
    }
}

/// Draws one scene at (ox, oy) on `img`, with its tags and `lines` of text under it (wrapped,
/// cut at `text_h` pixels).
fn draw_tile(img: &mut RgbImage, ox: u32, oy: u32, s: &Scene, lines: &[String], text_h: u32) {
    for y in 0..TILE_H {
        for x in 0..TILE_W {
            img.put_pixel(ox + x, oy + y, Rgb([200, 205, 210]));
        }
    }
    let sx = TILE_W as f32 / CANVAS.0;
    let sy = TILE_H as f32 / CANVAS.1;
    for o in &s.objects {
        let [x1, y1, x2, y2] = o.rect;
        let (a, b, c, d) = (
            ox + (x1 * sx) as u32,
            oy + (y1 * sy) as u32,
            ox + (x2 * sx) as u32,
            oy + (y2 * sy) as u32,
        );
        rect(
            img,
            a,
            b,
            c.min(ox + TILE_W - 1),
            d.min(oy + TILE_H - 1),
            rgb(o.colour),
        );
        text(img, a + 3, b + 3, name(o.category), Rgb([0, 0, 0]));
    }
    let tags: Vec<&str> = s.tags.iter().map(|t| t.class.as_str()).collect();
    let head = format!(
        "{} tags: {}",
        s.id.trim_start_matches("img"),
        tags.join(" ")
    );
    let mut y = oy + TILE_H + 4;
    for l in std::iter::once(&head).chain(lines) {
        for chunk in l.as_bytes().chunks((TILE_W / 8) as usize) {
            text(
                img,
                ox + 2,
                y,
                &String::from_utf8_lossy(chunk),
                Rgb([30, 30, 30]),
            );
            y += 10;
            if y > oy + TILE_H + text_h - 10 {
                return;
            }
        }
    }
}

/// A contact sheet of `scenes` (with one caption each), `cols` tiles wide.
pub fn contact_sheet(scenes: &[(&Scene, &str)], cols: u32) -> RgbImage {
    let with_lines: Vec<(&Scene, Vec<String>)> = scenes
        .iter()
        .map(|(s, c)| (*s, vec![c.to_string()]))
        .collect();
    annotated_sheet(&with_lines, cols, TEXT_H)
}

/// A contact sheet with several lines of text per scene (model outputs under each picture),
/// `text_h` pixels of text per tile.
pub fn annotated_sheet(scenes: &[(&Scene, Vec<String>)], cols: u32, text_h: u32) -> RgbImage {
    let rows = (scenes.len() as u32).div_ceil(cols).max(1);
    let mut img = RgbImage::from_pixel(
        cols * (TILE_W + 8),
        rows * (TILE_H + text_h + 8),
        Rgb([255, 255, 255]),
    );
    for (i, (s, lines)) in scenes.iter().enumerate() {
        let (c, r) = (i as u32 % cols, i as u32 / cols);
        draw_tile(
            &mut img,
            c * (TILE_W + 8) + 4,
            r * (TILE_H + text_h + 8) + 4,
            s,
            lines,
            text_h,
        );
    }
    img
}
