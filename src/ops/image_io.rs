//! Loading GIF, PNG, JPEG and BMP images as `u8` arrays, with PIL's grayscale.

use std::io::Cursor;
use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageFormat, ImageReader, RgbImage};
use ndarray::Array3;

use crate::error::{Error, Result};

/// The largest image file [`load_image`] reads: far above any photo or scan
/// a study loads, and small enough that `/dev/zero`, a FIFO or a huge file
/// is refused before it exhausts memory.
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// The largest width or height decoded or resized to.
pub const MAX_SIDE: u32 = 1 << 15;
/// The most pixels decoded or resized to (64 Mi pixels, 192 MiB as RGB).
pub const MAX_PIXELS: u64 = 1 << 26;
/// What the decoder may allocate for one image.
const MAX_DECODE_ALLOC: u64 = 1 << 30;

/// How [`load_image`] converts what it decodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// One luma channel (ITU-R 601, exactly as PIL's `convert("L")`) instead of RGB.
    pub grayscale: bool,
    /// Resize to `(width, height)` with a bilinear (triangle) filter that
    /// widens on downscaling, as PIL's `BILINEAR` does.
    pub size: Option<(u32, u32)>,
}

/// PIL's `L = (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16`.
#[inline]
#[must_use]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    let l = (u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16;
    // The weights sum to 65536, so `l <= 255`.
    u8::try_from(l).unwrap_or(u8::MAX)
}

/// Grayscale as PIL's `convert("L")`: gray images are kept, colour ones are
/// mixed with the ITU-R 601 weights, alpha is ignored. 16-bit images are
/// first scaled to 8 bits.
#[must_use]
pub fn to_gray(img: &DynamicImage) -> GrayImage {
    if let DynamicImage::ImageLuma8(gray) = img {
        return gray.clone();
    }
    if let DynamicImage::ImageLumaA8(_) = img {
        return img.to_luma8();
    }
    let rgb: RgbImage = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    let data = rgb
        .as_raw()
        .chunks_exact(3)
        .map(|p| luma(p[0], p[1], p[2]))
        .collect();
    GrayImage::from_raw(w, h, data).expect("one byte per pixel")
}

/// Reads an image file into `(H, W, 1)` (grayscale) or `(H, W, 3)` (RGB) `u8`.
///
/// # Errors
/// [`Error::NotFound`] / [`Error::Io`] when the file cannot be read,
/// [`Error::Format`] when it is not a GIF, PNG, JPEG or BMP image or is corrupt,
/// [`Error::InvalidArgument`] for a `size` with a zero side or more than
/// [`MAX_SIDE`] or [`MAX_PIXELS`]; [`Error::Format`] also for a file over
/// [`MAX_FILE_BYTES`] or an image larger than those limits.
pub fn load_image(path: &Path, opts: &LoadOptions) -> Result<Array3<u8>> {
    if let Some((w, h)) = opts.size {
        check_size(i64::from(w), i64::from(h))?;
    }
    let bytes = crate::fileio::read_limited(path, MAX_FILE_BYTES, "image")?;
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    match reader.format() {
        Some(ImageFormat::Gif | ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Bmp) => {}
        other => {
            let what = other.map_or_else(|| "an unknown format".to_string(), |f| format!("{f:?}"));
            return Err(Error::format(format!(
                "{}: not a GIF, PNG, JPEG or BMP image (found {what})",
                path.display()
            )));
        }
    }
    let img = reader.decode().map_err(|e| {
        Error::format(format!(
            "{}: corrupt or unsupported image: {e}",
            path.display()
        ))
    })?;
    if u64::from(img.width()) * u64::from(img.height()) > MAX_PIXELS {
        return Err(Error::format(format!(
            "{}: a {}x{} image has more than the {MAX_PIXELS} pixels cnnrs loads",
            path.display(),
            img.width(),
            img.height()
        )));
    }
    let (data, w, h, c) = if opts.grayscale {
        let mut g = to_gray(&img);
        if let Some((w, h)) = opts.size {
            g = image::imageops::resize(&g, w, h, FilterType::Triangle);
        }
        let (w, h) = g.dimensions();
        (g.into_raw(), w, h, 1)
    } else {
        let mut rgb = img.to_rgb8();
        if let Some((w, h)) = opts.size {
            rgb = image::imageops::resize(&rgb, w, h, FilterType::Triangle);
        }
        let (w, h) = rgb.dimensions();
        (rgb.into_raw(), w, h, 3)
    };
    Ok(Array3::from_shape_vec((h as usize, w as usize, c), data).expect("decoder sizes agree"))
}

/// Checks a resize target `(width, height)` before anything is allocated
/// for it: both sides in `[1, MAX_SIDE]`, at most [`MAX_PIXELS`] pixels.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `size` otherwise.
pub fn check_size(w: i64, h: i64) -> Result<(u32, u32)> {
    let side = |v: i64| u32::try_from(v).ok().filter(|v| (1..=MAX_SIDE).contains(v));
    match (side(w), side(h)) {
        (Some(wu), Some(hu)) if u64::from(wu) * u64::from(hu) <= MAX_PIXELS => Ok((wu, hu)),
        _ => Err(Error::invalid(format!(
            "size must be (width, height) with both sides in [1, {MAX_SIDE}] and at most \
             {MAX_PIXELS} pixels, got ({w}, {h})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_matches_pil() {
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(0, 0, 0), 0);
        // PIL: Image.new("RGB", (1, 1), (255, 0, 0)).convert("L").getpixel((0, 0)) == 76
        assert_eq!(luma(255, 0, 0), 76);
        assert_eq!(luma(0, 255, 0), 150);
        assert_eq!(luma(0, 0, 255), 29);
    }

    #[test]
    fn png_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        let rgb = RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8 * 60, y as u8 * 80, 10]));
        rgb.save(&path).unwrap();
        let color = load_image(
            &path,
            &LoadOptions {
                grayscale: false,
                size: None,
            },
        )
        .unwrap();
        assert_eq!(color.dim(), (3, 4, 3));
        assert_eq!(color[[2, 3, 0]], 180);
        let gray = load_image(
            &path,
            &LoadOptions {
                grayscale: true,
                size: None,
            },
        )
        .unwrap();
        assert_eq!(gray[[2, 3, 0]], luma(180, 160, 10));
        let small = load_image(
            &path,
            &LoadOptions {
                grayscale: true,
                size: Some((2, 5)),
            },
        )
        .unwrap();
        assert_eq!(small.dim(), (5, 2, 1));

        assert!(matches!(
            load_image(&dir.path().join("nope.png"), &LoadOptions::default()),
            Err(Error::NotFound(_))
        ));
        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        assert!(matches!(
            load_image(&bad, &LoadOptions::default()),
            Err(Error::Format(_))
        ));
        assert!(matches!(
            load_image(
                &path,
                &LoadOptions {
                    grayscale: true,
                    size: Some((100_000, 100_000)),
                },
            ),
            Err(Error::InvalidArgument(m)) if m.contains("size")
        ));
        assert!(matches!(
            load_image(Path::new("/dev/zero"), &LoadOptions::default()),
            Err(Error::Format(_))
        ));
        let txt = dir.path().join("a.txt");
        std::fs::write(&txt, b"hello").unwrap();
        assert!(matches!(
            load_image(&txt, &LoadOptions::default()),
            Err(Error::Format(_))
        ));
    }
}
