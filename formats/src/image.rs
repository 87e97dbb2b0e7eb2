//! JPEG and PNG images as one plain RGB8 buffer.
//!
//! Decoding takes any JPEG (baseline or progressive) or PNG (1..16-bit, gray,
//! gray+alpha, RGB, RGBA, palette) and returns 8-bit RGB rows, the way
//! PaddleDetection's `DecodeImage` (OpenCV `IMREAD_COLOR`, then BGR -> RGB)
//! sees them: alpha is dropped, not composited; 16-bit samples are rounded to
//! 8 bits; EXIF orientation is not applied. The entropy decoding itself is the
//! `image` crate's (zune-jpeg, png): thousands of lines of well-fuzzed code we
//! have no reason to rewrite.
//!
//! The header is read first and its dimensions checked against
//! [`MAX_SIDE`]/[`MAX_PIXELS`], so a corrupt or hostile header can never make
//! us allocate gigabytes.

use std::io::Cursor;
use std::path::Path;

use image::{ImageDecoder, ImageFormat, ImageReader};

use crate::atomic;
use crate::error::{Error, Result};

/// Largest width or height we accept (JPEG's own limit is 65535).
pub const MAX_SIDE: u32 = 32_768;
/// Largest pixel count we accept: 256 Mpx is 768 MB of RGB8, far above any
/// photo a detector trains on.
pub const MAX_PIXELS: u64 = 256 << 20;

/// An 8-bit RGB image, rows top to bottom, pixels left to right, `[r, g, b]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// A `width` x `height` image filled with one colour.
    pub fn filled(width: u32, height: u32, rgb: [u8; 3]) -> RgbImage {
        let pixels = width as usize * height as usize;
        let mut data = Vec::with_capacity(pixels * 3);
        for _ in 0..pixels {
            data.extend_from_slice(&rgb);
        }
        RgbImage {
            width,
            height,
            data,
        }
    }

    /// The `[r, g, b]` at column `x`, row `y`.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// Which codec a file holds, from its first bytes (never from its name).
fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else {
        None
    }
}

/// Reads and decodes the image file at `path`.
pub fn decode_file(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(&bytes, path)
}

/// Decodes JPEG or PNG `bytes`; `path` only names the source in errors.
pub fn decode(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    let format = sniff(bytes)
        .ok_or_else(|| Error::at(path, "byte 0", "not a JPEG or PNG file (unknown signature)"))?;
    let codec = match format {
        ImageFormat::Jpeg => "JPEG",
        _ => "PNG",
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // Only the allocation cap goes to the codec; the size rules are checked
    // below, after the header and before any pixel buffer, with our message.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 4 * 2);
    reader.limits(limits);
    let bad = |e: image::ImageError| Error::at(path, format!("{codec} data"), e.to_string());
    let decoder = reader.into_decoder().map_err(bad)?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, bytes.len(), format)
        .map_err(|msg| Error::at(path, format!("{codec} header"), msg))?;
    let decoded = image::DynamicImage::from_decoder(decoder).map_err(bad)?;
    let rgb = decoded.into_rgb8();
    Ok(RgbImage {
        width,
        height,
        data: rgb.into_raw(),
    })
}

/// Most pixels one byte of file can hold. PNG: deflate expands at most about
/// 1032:1 and a 1-bit palette row packs 8 pixels per byte. Baseline JPEG needs
/// at least 2 bits per 8x8 block, about 170 pixels per byte with 4:2:0
/// chroma; progressive end-of-band runs go further, so allow 12 times that.
const PNG_PIXELS_PER_BYTE: u64 = 1032 * 8;
const JPEG_PIXELS_PER_BYTE: u64 = 2048;
/// Headers of tiny files may claim this many pixels whatever their length.
const FREE_PIXELS: u64 = 1 << 20;

fn check_size(
    width: u32,
    height: u32,
    file_len: usize,
    format: ImageFormat,
) -> std::result::Result<(), String> {
    let pixels = width as u64 * height as u64;
    if pixels == 0 {
        return Err(format!("image is {width}x{height} pixels (empty)"));
    }
    if width > MAX_SIDE || height > MAX_SIDE || pixels > MAX_PIXELS {
        return Err(format!(
            "image is {width}x{height} pixels, over the limit of {MAX_SIDE} per side and {MAX_PIXELS} in all"
        ));
    }
    let per_byte = match format {
        ImageFormat::Png => PNG_PIXELS_PER_BYTE,
        _ => JPEG_PIXELS_PER_BYTE,
    };
    if pixels > FREE_PIXELS + per_byte * file_len as u64 {
        return Err(format!(
            "header claims {width}x{height} pixels, more than a file of {file_len} bytes can hold"
        ));
    }
    Ok(())
}

/// Writes `img` as a PNG file (atomically).
pub fn write_png(img: &RgbImage, path: &Path) -> Result<()> {
    use image::ImageEncoder;
    atomic::write_file(path, |out| {
        image::codecs::png::PngEncoder::new(out)
            .write_image(
                &img.data,
                img.width,
                img.height,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| Error::new(path, format!("PNG encoding: {e}")))
    })
}

/// Writes `img` as a baseline JPEG file with `quality` 1..=100 (atomically).
pub fn write_jpeg(img: &RgbImage, path: &Path, quality: u8) -> Result<()> {
    use image::ImageEncoder;
    atomic::write_file(path, |out| {
        image::codecs::jpeg::JpegEncoder::new_with_quality(out, quality.clamp(1, 100))
            .write_image(
                &img.data,
                img.width,
                img.height,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| Error::new(path, format!("JPEG encoding: {e}")))
    })
}

/// Writes PNG for a `.png` path and JPEG (quality 95) for anything else.
pub fn write(img: &RgbImage, path: &Path) -> Result<()> {
    let is_png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_png {
        write_png(img, path)
    } else {
        write_jpeg(img, path, 95)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/images")
            .join(name)
    }

    fn expected(name: &str) -> Vec<u8> {
        let stem = name.rsplit_once('.').unwrap().0;
        std::fs::read(fixture(&format!("{stem}.rgb"))).unwrap()
    }

    fn max_diff(a: &[u8], b: &[u8]) -> u8 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
    }

    #[test]
    fn png_colour_types_and_depths_decode_to_rgb8() {
        // 8-bit PNGs must match exactly; 16-bit may round or truncate.
        for (name, tolerance) in [
            ("rgb8.png", 0),
            ("rgba8.png", 0),
            ("gray8.png", 0),
            ("gray_alpha8.png", 0),
            ("palette8.png", 0),
            ("rgb16.png", 1),
            ("gray16.png", 1),
        ] {
            let img = decode_file(&fixture(name)).unwrap();
            assert_eq!((img.width, img.height), (37, 23), "{name}");
            assert!(max_diff(&img.data, &expected(name)) <= tolerance, "{name}");
        }
    }

    #[test]
    fn baseline_and_progressive_jpeg_match_libjpeg() {
        for name in ["baseline.jpg", "progressive.jpg"] {
            let img = decode_file(&fixture(name)).unwrap();
            assert_eq!((img.width, img.height), (37, 23), "{name}");
            let want = expected(name);
            let mean = img
                .data
                .iter()
                .zip(&want)
                .map(|(a, b)| a.abs_diff(*b) as f64)
                .sum::<f64>()
                / want.len() as f64;
            // IDCT and chroma upsampling differ slightly between decoders.
            assert!(mean < 1.5, "{name}: mean difference {mean}");
            assert!(max_diff(&img.data, &want) <= 24, "{name}");
        }
    }

    #[test]
    fn real_photos_decode() {
        // Photos from PaddleDetection's demo folder, kept in the repository
        // (tests/data/README.md says where from).
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/photos");
        for (name, w, h) in [
            ("000000014439.jpg", 640, 404),
            ("orange_71.jpg", 467, 417),
            ("road554.png", 150, 200),
        ] {
            let img = decode_file(&dir.join(name)).unwrap();
            assert_eq!((img.width, img.height), (w, h), "{name}");
            assert_eq!(img.data.len(), (w * h * 3) as usize);
        }
    }

    #[test]
    fn png_and_jpeg_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let img = decode_file(&fixture("rgb8.png")).unwrap();
        let png = dir.path().join("a.png");
        write(&img, &png).unwrap();
        assert_eq!(decode_file(&png).unwrap(), img);
        let jpg = dir.path().join("a.jpg");
        write(&img, &jpg).unwrap();
        let back = decode_file(&jpg).unwrap();
        assert_eq!((back.width, back.height), (37, 23));
        assert!(max_diff(&back.data, &img.data) < 40);
    }

    #[test]
    fn garbage_names_the_file() {
        let err = decode(b"hello, not an image", Path::new("dir/cat.jpg")).unwrap_err();
        assert!(err.to_string().starts_with("dir/cat.jpg (byte 0)"), "{err}");
    }

    #[test]
    fn truncated_files_error_without_panic() {
        for name in [
            "baseline.jpg",
            "progressive.jpg",
            "rgb16.png",
            "palette8.png",
        ] {
            let bytes = std::fs::read(fixture(name)).unwrap();
            for cut in [4, 20, bytes.len() / 2, bytes.len() - 3] {
                // A decoder may fill a cut-off JPEG tail with grey instead of
                // failing; either is fine as long as nothing panics.
                if let Err(e) = decode(&bytes[..cut], Path::new(name)) {
                    assert!(e.to_string().starts_with(name), "{e}");
                }
            }
        }
    }

    #[test]
    fn lying_header_is_refused_before_allocating() {
        // A PNG whose IHDR claims 60000 x 60000 pixels, with no data after it.
        let mut bytes = std::fs::read(fixture("rgb8.png")).unwrap();
        bytes[16..20].copy_from_slice(&60000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&60000u32.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode(&bytes, Path::new("huge.png")).unwrap_err();
        assert!(
            err.to_string().starts_with("huge.png (PNG header)"),
            "{err}"
        );
        assert!(err.to_string().contains("60000x60000"), "{err}");
        // Within the absolute limits but far more than 3 kB of PNG can hold.
        bytes[16..20].copy_from_slice(&5000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&5000u32.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode(&bytes, Path::new("huge.png")).unwrap_err();
        assert!(err.to_string().contains("more than a file of"), "{err}");
    }

    #[test]
    fn lying_jpeg_header_is_refused_before_allocating() {
        // Overwrite the frame header (SOF) height and width of the baseline fixture.
        let mut bytes = std::fs::read(fixture("baseline.jpg")).unwrap();
        let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        bytes[sof + 5..sof + 7].copy_from_slice(&20000u16.to_be_bytes());
        bytes[sof + 7..sof + 9].copy_from_slice(&20000u16.to_be_bytes());
        let err = decode(&bytes, Path::new("huge.jpg")).unwrap_err();
        assert!(
            err.to_string().starts_with("huge.jpg (JPEG header)"),
            "{err}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        /// Corrupted files (bytes overwritten anywhere, also in headers and
        /// Huffman tables) give an error naming the file or a picture, never
        /// a panic.
        #[test]
        fn corrupted_bytes_never_panic(
            which in 0usize..4,
            edits in proptest::collection::vec((0.0f64..1.0, proptest::prelude::any::<u8>()), 1..8),
        ) {
            let name = ["baseline.jpg", "progressive.jpg", "rgb16.png", "palette8.png"][which];
            let mut bytes = std::fs::read(fixture(name)).unwrap();
            for (at, value) in edits {
                let i = ((at * bytes.len() as f64) as usize).min(bytes.len() - 1);
                bytes[i] = value;
            }
            match decode(&bytes, Path::new(name)) {
                Ok(img) => proptest::prop_assert_eq!(
                    img.data.len(),
                    img.width as usize * img.height as usize * 3
                ),
                Err(e) => proptest::prop_assert!(e.to_string().starts_with(name)),
            }
        }
    }

    /// The PNG chunk checksum, so the forged header above passes its CRC check.
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in data {
            crc ^= byte as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
