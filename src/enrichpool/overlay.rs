//! `overlay=true`: draws a frame's results into it on the worker thread — a box per
//! `GstVideoRegionOfInterestMeta` with its type (and score, for detections), and a text line
//! with the sequence number, the analysis label and the worker. Text comes from
//! embedded-graphics' mono fonts.
//!
//! Any 8-bit RGB, BGR, GRAY or YUV layout GStreamer describes (the frameanalyzer's formats
//! among them) is drawn through the format's component offsets, strides and subsampling.

use embedded_graphics::mono_font::MonoFont;
use embedded_graphics::mono_font::MonoTextStyleBuilder;
use embedded_graphics::mono_font::ascii::{FONT_6X10, FONT_9X15};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};

use gst_video::prelude::*;

use crate::meta::{Enrichment, FrameAnalysis, SeqMeta};

/// Motion regions.
pub const MOTION: Rgb888 = Rgb888::new(255, 220, 0);
/// Detections (ROIs with a `detection` parameter).
pub const DETECTION: Rgb888 = Rgb888::new(0, 230, 64);
/// Any other ROI type.
pub const OTHER: Rgb888 = Rgb888::new(0, 200, 255);
/// Detections carried from an earlier frame (`carry-forward`): the detection colour, dimmed.
pub const STALE: Rgb888 = Rgb888::new(0, 100, 28);
/// Regions whose crop job failed (`infer-on=rois`).
pub const FAILED: Rgb888 = Rgb888::new(230, 40, 40);
pub const TEXT: Rgb888 = Rgb888::WHITE;
pub const TEXT_BACKGROUND: Rgb888 = Rgb888::BLACK;

/// Where one colour component of a pixel lives.
#[derive(Clone, Copy)]
struct Component {
    plane: usize,
    offset: usize,
    pixel_stride: usize,
    w_sub: u32,
    h_sub: u32,
}

/// A writable video frame as an embedded-graphics target.
struct Canvas<'a> {
    frame: gst_video::VideoFrameRef<&'a mut gst::BufferRef>,
    width: u32,
    height: u32,
    /// Y (or gray), U, V; or R, G, B.
    components: Vec<Component>,
    yuv: bool,
}

/// BT.601 limited range, integers.
fn rgb_to_yuv(c: Rgb888) -> [u8; 3] {
    let (r, g, b) = (c.r() as i32, c.g() as i32, c.b() as i32);
    let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
    let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    [y, u, v].map(|x| x.clamp(0, 255) as u8)
}

impl<'a> Canvas<'a> {
    fn new(
        buffer: &'a mut gst::BufferRef,
        info: &gst_video::VideoInfo,
    ) -> Result<Canvas<'a>, String> {
        let format = info.format_info();
        if format.bits() != 8
            || format
                .flags()
                .contains(gst_video::VideoFormatFlags::PALETTE)
        {
            return Err(format!("cannot draw on {} frames", info.format()));
        }
        let yuv = format.is_yuv();
        let n = if format.is_gray() { 1 } else { 3 };
        if !(yuv || format.is_rgb() || format.is_gray()) || (format.n_components() as usize) < n {
            return Err(format!("cannot draw on {} frames", info.format()));
        }
        let components = (0..n)
            .map(|c| Component {
                plane: format.plane()[c] as usize,
                offset: format.poffset()[c] as usize,
                pixel_stride: format.pixel_stride()[c] as usize,
                w_sub: format.w_sub()[c],
                h_sub: format.h_sub()[c],
            })
            .collect();
        let frame = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, info)
            .map_err(|_| "the buffer does not match its caps".to_string())?;
        Ok(Canvas {
            frame,
            width: info.width(),
            height: info.height(),
            components,
            yuv,
        })
    }

    fn put(&mut self, x: u32, y: u32, color: Rgb888) {
        let values = if self.yuv || self.components.len() == 1 {
            rgb_to_yuv(color)
        } else {
            [color.r(), color.g(), color.b()]
        };
        let frame = &mut self.frame;
        for (c, value) in self.components.iter().zip(values) {
            let stride = frame.plane_stride()[c.plane] as usize;
            let Ok(data) = frame.plane_data_mut(c.plane as u32) else {
                continue;
            };
            let index = (y >> c.h_sub) as usize * stride
                + (x >> c.w_sub) as usize * c.pixel_stride
                + c.offset;
            if let Some(byte) = data.get_mut(index) {
                *byte = value;
            }
        }
    }
}

impl OriginDimensions for Canvas<'_> {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Canvas<'_> {
    type Color = Rgb888;
    type Error = std::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        for Pixel(point, color) in pixels {
            if point.x >= 0
                && point.y >= 0
                && (point.x as u32) < self.width
                && (point.y as u32) < self.height
            {
                self.put(point.x as u32, point.y as u32, color);
            }
        }
        Ok(())
    }
}

/// What one ROI meta asks to draw.
struct Region {
    rect: (u32, u32, u32, u32),
    color: Rgb888,
    caption: String,
}

fn regions(buffer: &gst::BufferRef) -> Vec<Region> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|meta| {
            let roi_type = meta.roi_type().to_string();
            let detection = meta.param("detection");
            let score = detection.and_then(|p| p.get::<f64>("score").ok());
            let stale = detection.is_some_and(|p| p.get::<bool>("stale").unwrap_or(false));
            // A region's own result (infer-on=rois): its label or class, or that it failed.
            let result = meta.param("enrichment");
            let failed = result.is_some_and(|p| p.get::<bool>("failed").unwrap_or(false));
            let label = result.and_then(|p| {
                ["label", "class"]
                    .iter()
                    .find_map(|&f| p.get::<String>(f).ok())
            });
            let (color, caption) = match (roi_type.as_str(), score) {
                _ if failed => (FAILED, format!("{roi_type} failed")),
                (_, Some(score)) if stale => (STALE, format!("stale {roi_type} {score:.2}")),
                (_, Some(score)) => (DETECTION, format!("{roi_type} {score:.2}")),
                ("motion", _) => (MOTION, roi_type),
                _ => (OTHER, roi_type),
            };
            let caption = match label {
                Some(label) => format!("{caption}: {label}"),
                None => caption,
            };
            Region {
                rect: meta.rect(),
                color,
                caption,
            }
        })
        .collect()
}

/// The text line: `#<seq> <label> w<worker>`, and `stale` when its results are carried.
pub fn caption(buffer: &gst::BufferRef, worker: u32) -> String {
    let seq = match SeqMeta::read(buffer) {
        Some(Ok(meta)) => meta.seq.to_string(),
        _ => "?".into(),
    };
    let line = match FrameAnalysis::read(buffer) {
        Some(Ok(analysis)) => format!("#{seq} {} w{worker}", analysis.label.as_str()),
        _ => format!("#{seq} w{worker}"),
    };
    let stale = match Enrichment::read(buffer) {
        Some(Ok(e)) => e.outputs.get::<bool>("stale").unwrap_or(false),
        _ => false,
    };
    if stale { format!("{line} stale") } else { line }
}

/// Draws the frame's ROIs and its text line into it.
pub fn draw(
    buffer: &mut gst::BufferRef,
    info: &gst_video::VideoInfo,
    worker: u32,
) -> Result<(), String> {
    let regions = regions(buffer);
    let line = caption(buffer, worker);
    let mut canvas = Canvas::new(buffer, info)?;
    // Small frames get the small font.
    let font: &MonoFont = if info.width() >= 480 {
        &FONT_9X15
    } else {
        &FONT_6X10
    };
    let line_height = font.character_size.height as i32 + 1;
    let text_style = |color: Rgb888| {
        MonoTextStyleBuilder::new()
            .font(font)
            .text_color(TEXT)
            .background_color(color)
            .build()
    };
    for region in &regions {
        let (x, y, w, h) = region.rect;
        let thickness = if info.width() >= 320 { 2 } else { 1 };
        let _ = Rectangle::new(Point::new(x as i32, y as i32), Size::new(w, h))
            .into_styled(PrimitiveStyle::with_stroke(region.color, thickness))
            .draw(&mut canvas);
        // The caption above the box, or inside it at the top edge of the frame.
        let top = if y as i32 >= line_height {
            y as i32 - line_height
        } else {
            y as i32 + 1
        };
        // Kept inside the frame on the right too.
        let caption_width = (font.character_size.width * region.caption.len() as u32) as i32;
        let left = (x as i32).min(info.width() as i32 - caption_width).max(0);
        let _ = Text::with_baseline(
            &region.caption,
            Point::new(left, top),
            MonoTextStyleBuilder::new()
                .font(font)
                .text_color(TEXT_BACKGROUND)
                .background_color(region.color)
                .build(),
            Baseline::Top,
        )
        .draw(&mut canvas);
    }
    let _ = Text::with_baseline(
        &line,
        Point::new(2, 2),
        text_style(TEXT_BACKGROUND),
        Baseline::Top,
    )
    .draw(&mut canvas);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(
        format: gst_video::VideoFormat,
        width: u32,
        height: u32,
    ) -> (gst::Buffer, gst_video::VideoInfo) {
        let info = gst_video::VideoInfo::builder(format, width, height)
            .build()
            .unwrap();
        let mut buffer = gst::Buffer::with_size(info.size()).unwrap();
        // Mid grey everywhere (RGB 128; Y/U/V 128 is a grey too).
        buffer.get_mut().unwrap().map_writable().unwrap().fill(128);
        (buffer, info)
    }

    /// The colour at (x, y), read back through the same layout, as RGB or (Y, U, V).
    fn read(buffer: &gst::BufferRef, info: &gst_video::VideoInfo, x: u32, y: u32) -> Vec<u8> {
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info).unwrap();
        let f = info.format_info();
        let n = if f.is_gray() { 1 } else { 3 };
        (0..n)
            .map(|c| {
                let plane = f.plane()[c] as usize;
                let stride = frame.plane_stride()[plane] as usize;
                let data = frame.plane_data(plane as u32).unwrap();
                data[(y >> f.h_sub()[c]) as usize * stride
                    + (x >> f.w_sub()[c]) as usize * f.pixel_stride()[c] as usize
                    + f.poffset()[c] as usize]
            })
            .collect()
    }

    fn expected(info: &gst_video::VideoInfo, color: Rgb888) -> Vec<u8> {
        let f = info.format_info();
        if f.is_gray() {
            vec![rgb_to_yuv(color)[0]]
        } else if f.is_yuv() {
            rgb_to_yuv(color).to_vec()
        } else {
            vec![color.r(), color.g(), color.b()]
        }
    }

    #[test]
    fn boxes_and_text_land_where_the_metas_say_in_every_format() {
        gst::init().unwrap();
        use gst_video::VideoFormat::*;
        for format in [I420, Nv12, Gray8, Rgba, Bgra, Rgbx, Bgrx, Rgb, Bgr] {
            // Odd sizes: subsampled planes round up.
            let (mut buffer, info) = frame(format, 97, 61);
            {
                let b = buffer.get_mut().unwrap();
                SeqMeta {
                    seq: 42,
                    epoch: 0,
                    ingress: 0,
                }
                .add(b);
                gst_video::VideoRegionOfInterestMeta::add(b, "motion", (10, 20, 30, 20));
                let mut det =
                    gst_video::VideoRegionOfInterestMeta::add(b, "ball", (60, 30, 20, 20));
                det.add_param(
                    gst::Structure::builder("detection")
                        .field("score", 0.5f64)
                        .build(),
                );
            }
            draw(buffer.get_mut().unwrap(), &info, 3).unwrap();
            // Box edges: left edge of the motion box, bottom edge of the detection.
            assert_eq!(
                read(&buffer, &info, 10, 30),
                expected(&info, MOTION),
                "{format:?}"
            );
            assert_eq!(
                read(&buffer, &info, 70, 49),
                expected(&info, DETECTION),
                "{format:?}"
            );
            // Inside the boxes, away from captions: untouched.
            assert_eq!(read(&buffer, &info, 25, 32)[0], 128, "{format:?}");
            assert_eq!(read(&buffer, &info, 70, 42)[0], 128, "{format:?}");
            // The text line at the top left: its background and some glyph pixels.
            let line: Vec<Vec<u8>> = (2..60).map(|x| read(&buffer, &info, x, 6)).collect();
            assert!(
                line.contains(&expected(&info, TEXT_BACKGROUND)),
                "{format:?}"
            );
            assert!(line.contains(&expected(&info, TEXT)), "{format:?}");
            // Far corner: untouched.
            assert_eq!(read(&buffer, &info, 96, 60)[0], 128, "{format:?}");
        }
    }

    #[test]
    fn stale_and_failed_regions_are_drawn_apart_with_their_results() {
        gst::init().unwrap();
        let (mut buffer, info) = frame(gst_video::VideoFormat::Rgb, 97, 61);
        {
            let b = buffer.get_mut().unwrap();
            let mut stale = gst_video::VideoRegionOfInterestMeta::add(b, "car", (10, 20, 30, 20));
            stale.add_param(
                gst::Structure::builder("detection")
                    .field("score", 0.9f64)
                    .field("stale", true)
                    .build(),
            );
            let mut failed = gst_video::VideoRegionOfInterestMeta::add(b, "face", (60, 30, 20, 20));
            failed.add_param(
                gst::Structure::builder("enrichment")
                    .field("failed", true)
                    .build(),
            );
            let mut classified =
                gst_video::VideoRegionOfInterestMeta::add(b, "person", (45, 5, 10, 10));
            classified.add_param(
                gst::Structure::builder("enrichment")
                    .field("label", "adult")
                    .build(),
            );
        }
        let names: Vec<String> = regions(&buffer).into_iter().map(|r| r.caption).collect();
        assert_eq!(
            names,
            vec!["stale car 0.90", "face failed", "person: adult"]
        );
        draw(buffer.get_mut().unwrap(), &info, 0).unwrap();
        assert_eq!(read(&buffer, &info, 10, 30), expected(&info, STALE));
        assert_eq!(read(&buffer, &info, 70, 49), expected(&info, FAILED));
        assert_eq!(read(&buffer, &info, 45, 12), expected(&info, OTHER));
    }

    #[test]
    fn the_caption_names_sequence_label_and_worker() {
        gst::init().unwrap();
        let (mut buffer, _) = frame(gst_video::VideoFormat::Gray8, 8, 8);
        assert_eq!(caption(&buffer, 1), "#? w1");
        SeqMeta {
            seq: 7,
            epoch: 0,
            ingress: 0,
        }
        .add(buffer.get_mut().unwrap());
        assert_eq!(caption(&buffer, 2), "#7 w2");
        let mut outputs = gst::Structure::new_empty("outputs");
        outputs.set("stale", true);
        Enrichment {
            worker: 0,
            server: String::new(),
            attempts: 1,
            processing_time: 0,
            outputs,
        }
        .add(buffer.get_mut().unwrap())
        .unwrap();
        assert_eq!(caption(&buffer, 2), "#7 w2 stale");
    }

    #[test]
    fn formats_that_cannot_be_drawn_are_refused() {
        gst::init().unwrap();
        let (mut buffer, info) = frame(gst_video::VideoFormat::I42010le, 16, 16);
        assert!(
            draw(buffer.get_mut().unwrap(), &info, 0)
                .unwrap_err()
                .contains("cannot draw")
        );
    }
}
