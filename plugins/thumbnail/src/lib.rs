//! `thumbnail`: decodes an image (PNG, JPEG or GIF), fits it inside a box
//! keeping its aspect ratio, and stores the result as a PNG media object.
//!
//! Input `{"image_base64": "...", "path": "/scratch/in.png", "width": 128,
//! "height": 128, "name": "thumb.png"}`: exactly one of `image_base64` (the
//! image's bytes, standard base64; whitespace is ignored) or `path` (a file
//! read through WASI, so in practice under the scratch directory `/scratch`
//! that the task grants). The image is at most 32 MiB and at most 40
//! megapixels. `width` and `height` (default 128 each, 1–4096) are the box the
//! thumbnail fits in; an image that already fits is not enlarged. `name` is
//! the media object's file name (default `thumbnail.png`), a plain file name.
//! The format is guessed from the bytes; a JPEG's EXIF orientation is applied.
//!
//! - Result: `{"width", "height", "source_width", "source_height", "media":
//!   {"id", "url"}, "bytes"}`: the thumbnail's size, the source's (as
//!   displayed, after orientation), the stored object and the PNG's size.
//! - Outputs: `width`, `height`, `source_width`, `source_height`.
//! - Metrics: durations `decode`, `resize`, `encode`; counter `thumbnails`.
//! - Media: the thumbnail, `image/png`, under `name`.

use std::fs::File;
use std::io::{Cursor, Read};

use base64::Engine;
use image::codecs::png::PngEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageError, ImageReader, Limits};
use serde::{Deserialize, Serialize};
use ward_sdk::{Context, Error, ResultExt};

/// The largest image accepted, in bytes (before decoding).
pub const MAX_IMAGE_BYTES: usize = 32 * 1024 * 1024;
/// The most pixels (width × height) a source image may have.
pub const MAX_PIXELS: u64 = 40_000_000;
/// The largest side of the box.
pub const MAX_SIDE: u32 = 4096;
/// The box's side when the input does not say.
pub const DEFAULT_SIDE: u32 = 128;
/// The media object's name when the input does not say.
pub const DEFAULT_NAME: &str = "thumbnail.png";
/// Longest media name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// The action's input.
#[derive(Deserialize, Default, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct Input {
    pub image_base64: Option<String>,
    pub path: Option<String>,
    pub width: Option<serde_json::Value>,
    pub height: Option<serde_json::Value>,
    pub name: Option<String>,
}

/// Where the image comes from.
#[derive(Debug, PartialEq, Eq)]
pub enum Source<'a> {
    Base64(&'a str),
    Path(&'a str),
}

/// The input, checked.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub source: Source<'a>,
    pub width: u32,
    pub height: u32,
    pub name: &'a str,
}

/// A stored media object, as it appears in the result.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub id: String,
    pub url: String,
}

/// The action's result.
#[derive(Serialize, Debug)]
pub struct Output {
    pub width: u32,
    pub height: u32,
    pub source_width: u32,
    pub source_height: u32,
    pub media: Media,
    pub bytes: usize,
}

fn side(value: Option<&serde_json::Value>, field: &str) -> Result<u32, Error> {
    match value {
        None => Ok(DEFAULT_SIDE),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=u64::from(MAX_SIDE)).contains(n))
            .map(|n| n as u32)
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "`{field}` must be an integer from 1 to {MAX_SIDE}, not {v}"
                ))
            }),
    }
}

/// Checks that `name` is a plain file name: not empty, no path separator,
/// not `.` or `..`, no control character, at most [`MAX_NAME_BYTES`].
pub fn check_name(name: &str) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::invalid_input(format!("`name` {name:?} {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return bad(&format!("is longer than {MAX_NAME_BYTES} bytes"));
    }
    if name.contains(['/', '\\']) {
        return bad("must be a plain file name, without a path separator");
    }
    if name == "." || name == ".." {
        return bad("must be a plain file name");
    }
    if name.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    Ok(())
}

/// Checks the input: exactly one source, box sides in `1..=MAX_SIDE`, a
/// plain file name.
pub fn validate(input: &Input) -> Result<Request<'_>, Error> {
    let source = match (input.image_base64.as_deref(), input.path.as_deref()) {
        (Some(b), None) => Source::Base64(b),
        (None, Some(p)) => Source::Path(p),
        (None, None) => {
            return Err(Error::invalid_input(
                "give the image as `image_base64` or as `path` (a file under /scratch)",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(Error::invalid_input(
                "give either `image_base64` or `path`, not both",
            ));
        }
    };
    let width = side(input.width.as_ref(), "width")?;
    let height = side(input.height.as_ref(), "height")?;
    let name = input.name.as_deref().unwrap_or(DEFAULT_NAME);
    check_name(name)?;
    Ok(Request {
        source,
        width,
        height,
        name,
    })
}

fn too_big(len: impl std::fmt::Display) -> Error {
    Error::invalid_input(format!(
        "the image is {len} bytes, over the limit of {MAX_IMAGE_BYTES} bytes (32 MiB)"
    ))
}

/// Decodes base64 image bytes (standard alphabet, padding optional, ASCII
/// whitespace ignored), refusing more than [`MAX_IMAGE_BYTES`].
pub fn decode_base64(text: &str) -> Result<Vec<u8>, Error> {
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    // Each 4 characters make 3 bytes; check before decoding anything.
    let decoded_len = compact.len() / 4 * 3 + (compact.len() % 4).saturating_sub(1);
    if decoded_len > MAX_IMAGE_BYTES + 2 {
        return Err(too_big(format!("about {decoded_len}")));
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine
        .decode(&compact)
        .map_err(|e| Error::invalid_input(format!("`image_base64` is not valid base64: {e}")))?;
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(too_big(bytes.len()));
    }
    Ok(bytes)
}

/// Reads the image at `path`, refusing more than [`MAX_IMAGE_BYTES`]. Any
/// error names the path and the OS error.
pub fn read_path(path: &str) -> Result<Vec<u8>, Error> {
    let unreadable =
        |e: std::io::Error| Error::invalid_input(format!("cannot read `path` {path:?}: {e}"));
    let file = File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(MAX_IMAGE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(too_big(format!("more than {MAX_IMAGE_BYTES}")));
    }
    Ok(bytes)
}

fn undecodable(e: ImageError) -> Error {
    match e {
        ImageError::Limits(l) => Error::invalid_input(format!(
            "the image is too large to decode (at most {MAX_PIXELS} pixels): {l}"
        )),
        e => Error::invalid_input(format!("cannot decode the image: {e}")),
    }
}

/// Decodes `bytes` (format guessed from the content), refusing images over
/// [`MAX_PIXELS`] before their pixels are decoded, and applies the EXIF
/// orientation.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, Error> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .fatal()?;
    if reader.format().is_none() {
        return Err(Error::invalid_input(
            "cannot decode the image: not a recognised format (PNG, JPEG or GIF)",
        ));
    }
    // The decoder's allocations: room for the largest accepted image at 8
    // bytes a pixel (16-bit RGBA), the most these formats decode to.
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 8);
    reader.limits(limits.clone());
    let mut decoder = reader.into_decoder().map_err(undecodable)?;
    let (w, h) = decoder.dimensions();
    let pixels = u64::from(w) * u64::from(h);
    if pixels > MAX_PIXELS {
        return Err(Error::invalid_input(format!(
            "the image is {w}×{h} = {pixels} pixels, over the limit of {MAX_PIXELS} (40 megapixels)"
        )));
    }
    limits.reserve(decoder.total_bytes()).map_err(undecodable)?;
    let orientation = decoder.orientation().map_err(undecodable)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(undecodable)?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// The size of a `width`×`height` image fitted inside a `box_w`×`box_h` box,
/// keeping its aspect ratio (rounded, at least 1×1). An image that already
/// fits keeps its size.
pub fn fit(width: u32, height: u32, box_w: u32, box_h: u32) -> (u32, u32) {
    if width <= box_w && height <= box_h {
        return (width, height);
    }
    let ratio = f64::min(
        f64::from(box_w) / f64::from(width),
        f64::from(box_h) / f64::from(height),
    );
    let scale = |side: u32, max: u32| ((f64::from(side) * ratio).round() as u32).clamp(1, max);
    (scale(width, box_w), scale(height, box_h))
}

/// `image` fitted inside the box (see [`fit`]), with a triangle filter.
pub fn resize(image: &DynamicImage, box_w: u32, box_h: u32) -> DynamicImage {
    let (w, h) = fit(image.width(), image.height(), box_w, box_h);
    if (w, h) == (image.width(), image.height()) {
        image.clone()
    } else {
        image.resize_exact(w, h, FilterType::Triangle)
    }
}

/// `image` encoded as PNG.
pub fn encode_png(image: &DynamicImage) -> Result<Vec<u8>, Error> {
    let mut png = Vec::new();
    // PNG has no float samples; these decoders never make them, but be safe.
    let converted;
    let image = match image {
        DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => {
            converted = DynamicImage::ImageRgba16(image.to_rgba16());
            &converted
        }
        _ => image,
    };
    image
        .write_with_encoder(PngEncoder::new(&mut png))
        .fatal()?;
    Ok(png)
}

fn thumbnail(ctx: &Context, input: Input) -> Result<Output, Error> {
    let request = validate(&input)?;
    let (box_w, box_h, name) = (request.width, request.height, request.name.to_owned());
    let bytes = match request.source {
        Source::Base64(text) => decode_base64(text)?,
        Source::Path(path) => read_path(path)?,
    };
    drop(input); // the base64 text may be large

    let source = {
        let _timer = ctx.timer("decode");
        decode(&bytes)?
    };
    drop(bytes);
    let (source_width, source_height) = (source.width(), source.height());

    let thumb = {
        let _timer = ctx.timer("resize");
        resize(&source, box_w, box_h)
    };
    drop(source);
    let (width, height) = (thumb.width(), thumb.height());

    let png = {
        let _timer = ctx.timer("encode");
        encode_png(&thumb)?
    };
    ctx.info(format!(
        "{source_width}×{source_height} → {width}×{height}, {} bytes of PNG",
        png.len()
    ));

    let media = ctx.media(&name, "image/png", &png)?;
    ctx.counter("thumbnails", 1);
    ctx.output("width", &width)?;
    ctx.output("height", &height)?;
    ctx.output("source_width", &source_width)?;
    ctx.output("source_height", &source_height)?;

    Ok(Output {
        width,
        height,
        source_width,
        source_height,
        media: Media {
            id: media.id,
            url: media.url,
        },
        bytes: png.len(),
    })
}

ward_sdk::action!(thumbnail);

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use image::{ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
    use serde_json::json;

    fn input(value: serde_json::Value) -> Input {
        serde_json::from_value(value).unwrap()
    }

    fn invalid<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
        match r {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    fn png_of(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn input_defaults_and_checks() {
        let i = input(json!({"image_base64": "AAAA"}));
        assert_eq!(
            validate(&i).unwrap(),
            Request {
                source: Source::Base64("AAAA"),
                width: 128,
                height: 128,
                name: "thumbnail.png"
            }
        );
        let i =
            input(json!({"path": "/scratch/a.png", "width": 4096, "height": 1, "name": "t.png"}));
        let r = validate(&i).unwrap();
        assert_eq!(r.source, Source::Path("/scratch/a.png"));
        assert_eq!((r.width, r.height, r.name), (4096, 1, "t.png"));

        assert!(invalid(validate(&input(json!({})))).contains("`image_base64` or as `path`"));
        assert!(
            invalid(validate(&input(json!({"image_base64": "", "path": "x"}))))
                .contains("not both")
        );
        for bad in [json!(0), json!(4097), json!(-3), json!(1.5), json!("64")] {
            let m = invalid(validate(&input(json!({"path": "p", "width": bad}))));
            assert!(
                m.contains("`width` must be an integer from 1 to 4096"),
                "{m}"
            );
            let m = invalid(validate(&input(json!({"path": "p", "height": bad}))));
            assert!(m.contains("`height`"), "{m}");
        }
        assert!(serde_json::from_value::<Input>(json!({"path": "p", "size": 3})).is_err());
    }

    #[test]
    fn name_must_be_a_plain_file_name() {
        let long = "x".repeat(256);
        for bad in [
            "",
            "a/b.png",
            "../x.png",
            "a\\b",
            ".",
            "..",
            "a\nb",
            long.as_str(),
        ] {
            let m = invalid(validate(&input(json!({"path": "p", "name": bad}))));
            assert!(m.contains("`name`"), "{m}");
        }
        for good in ["thumb.png", "my thumb (1).png", "été.png", "..png"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn base64_is_decoded_or_refused() {
        let png = png_of(3, 2);
        let text = STANDARD.encode(&png);
        assert_eq!(decode_base64(&text).unwrap(), png);
        // Wrapped lines and missing padding are fine.
        let wrapped: String = text
            .as_bytes()
            .chunks(10)
            .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
            .collect();
        assert_eq!(decode_base64(&wrapped).unwrap(), png);
        assert_eq!(decode_base64("YWI").unwrap(), b"ab");
        assert!(invalid(decode_base64("not base64!")).contains("not valid base64"));
    }

    #[test]
    fn base64_over_32_mib_is_refused_before_decoding() {
        // 3 bytes per 4 characters: one byte over, found after decoding.
        let just_over = "AAAA".repeat(MAX_IMAGE_BYTES / 3 + 1);
        let m = invalid(decode_base64(&just_over));
        assert!(m.contains("33554433 bytes") && m.contains("32 MiB"), "{m}");
        // Far over: refused from the text's length alone.
        let far_over = "AAAA".repeat(MAX_IMAGE_BYTES / 3 + 10);
        let m = invalid(decode_base64(&far_over));
        assert!(m.contains("about") && m.contains("32 MiB"), "{m}");
        let fits = "AAAA".repeat(MAX_IMAGE_BYTES / 3);
        assert_eq!(decode_base64(&fits).unwrap().len(), MAX_IMAGE_BYTES / 3 * 3);
    }

    #[test]
    fn unreadable_path_names_the_path_and_the_error() {
        let m = invalid(read_path("/no/such/dir/in.png"));
        assert!(m.contains("\"/no/such/dir/in.png\""), "{m}");
        assert!(m.to_lowercase().contains("no such file"), "{m}");
    }

    #[test]
    fn reads_a_file() {
        let dir = std::env::temp_dir().join(format!("thumbnail-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("in.png");
        let png = png_of(5, 4);
        std::fs::write(&path, &png).unwrap();
        assert_eq!(read_path(path.to_str().unwrap()).unwrap(), png);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fit_keeps_the_aspect_ratio_inside_the_box() {
        assert_eq!(fit(1000, 500, 128, 128), (128, 64));
        assert_eq!(fit(500, 1000, 128, 128), (64, 128));
        assert_eq!(fit(300, 200, 100, 100), (100, 67));
        assert_eq!(fit(1000, 1000, 200, 50), (50, 50));
        // Never below one pixel, never enlarged.
        assert_eq!(fit(10_000, 1, 100, 100), (100, 1));
        assert_eq!(fit(1, 10_000, 100, 100), (1, 100));
        assert_eq!(fit(40, 30, 128, 128), (40, 30));
        assert_eq!(fit(128, 128, 128, 128), (128, 128));
    }

    #[test]
    fn resizes_and_encodes_a_png() {
        let source = decode(&png_of(400, 300)).unwrap();
        assert_eq!((source.width(), source.height()), (400, 300));
        let thumb = resize(&source, 128, 128);
        assert_eq!((thumb.width(), thumb.height()), (128, 96));
        let ratio = f64::from(thumb.width()) / f64::from(thumb.height());
        assert!((ratio - 400.0 / 300.0).abs() < 0.02);

        let png = encode_png(&thumb).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        let back = image::load_from_memory(&png).unwrap();
        assert_eq!((back.width(), back.height()), (128, 96));
    }

    #[test]
    fn decodes_jpeg_and_gif_too_and_keeps_alpha() {
        for format in [ImageFormat::Jpeg, ImageFormat::Gif] {
            let img = RgbImage::from_pixel(60, 20, Rgb([200, 10, 10]));
            let mut bytes = Cursor::new(Vec::new());
            img.write_to(&mut bytes, format).unwrap();
            let thumb = resize(&decode(bytes.get_ref()).unwrap(), 30, 30);
            assert_eq!((thumb.width(), thumb.height()), (30, 10), "{format:?}");
        }
        let rgba = RgbaImage::from_pixel(20, 20, Rgba([0, 0, 0, 0]));
        let mut bytes = Cursor::new(Vec::new());
        rgba.write_to(&mut bytes, ImageFormat::Png).unwrap();
        let thumb = resize(&decode(bytes.get_ref()).unwrap(), 10, 10);
        let back = image::load_from_memory(&encode_png(&thumb).unwrap()).unwrap();
        assert!(back.color().has_alpha());
        assert_eq!(back.to_rgba8().get_pixel(5, 5)[3], 0);
    }

    #[test]
    fn a_bad_image_is_invalid_input() {
        assert!(invalid(decode(b"hello, not an image")).contains("not a recognised format"));
        let mut png = png_of(50, 50);
        png.truncate(60);
        let m = invalid(decode(&png));
        assert!(m.starts_with("cannot decode the image: "), "{m}");
        assert!(invalid(decode(&[])).contains("cannot decode"));
    }

    /// A PNG header that claims `w`×`h`, with almost no pixel data: what a
    /// decompression bomb looks like to the decoder before it inflates.
    fn png_claiming(w: u32, h: u32) -> Vec<u8> {
        let mut png = png_of(1, 1);
        // IHDR data starts at byte 16: width, height (big endian), then its CRC at 29.
        png[16..20].copy_from_slice(&w.to_be_bytes());
        png[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        png
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
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

    #[test]
    fn images_over_40_megapixels_are_refused() {
        // Make sure the forged header is otherwise accepted: a small claim
        // fails later, on the missing pixel data, not on the size.
        let m = invalid(decode(&png_claiming(100, 100)));
        assert!(!m.contains("megapixels"), "{m}");

        let m = invalid(decode(&png_claiming(8000, 5001)));
        assert!(
            m.contains("8000×5001") && m.contains("40 megapixels"),
            "{m}"
        );
        let m = invalid(decode(&png_claiming(100_000, 100_000)));
        assert!(m.contains("10000000000 pixels"), "{m}");
    }

    #[test]
    fn result_shape() {
        let out = Output {
            width: 128,
            height: 96,
            source_width: 400,
            source_height: 300,
            media: Media {
                id: "m".into(),
                url: "u".into(),
            },
            bytes: 42,
        };
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            json!({"width": 128, "height": 96, "source_width": 400, "source_height": 300,
                   "media": {"id": "m", "url": "u"}, "bytes": 42})
        );
    }
}
