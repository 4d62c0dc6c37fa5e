//! Drawing the detector's boxes into the planes of the frames that go into a clip.

use opencv::core::{Rect, Scalar, Size};
use opencv::imgproc;

use crate::i420::I420Image;

/// The annotation colour, BGR green, as the original service drew it.
pub const BOX_BGR: [u8; 3] = [0, 255, 0];
/// Line width in frame pixels (one chroma sample).
const BOX_THICKNESS: i32 = 2;

/// Draws a rectangle around each moving region, in place: its outline, just inside the box, into the Y
/// plane at full resolution and into the U and V planes at half. Each box is first widened to even pixel
/// edges, so that every pixel of its outline has the box's chroma (a line on an odd column would share
/// its chroma sample with the scene).
pub fn draw_boxes(image: &mut I420Image, boxes: &[Rect]) -> opencv::Result<()> {
    if boxes.is_empty() {
        return Ok(());
    }
    let size = image.size();
    let [y, u, v] = image
        .colorimetry()
        .yuv_of(BOX_BGR)
        .map(|c| Scalar::all(f64::from(c)));
    let mut planes = image.planes_mut()?;
    for rect in boxes.iter().filter_map(|rect| on_even_edges(*rect, size)) {
        for band in outline(rect, BOX_THICKNESS) {
            imgproc::rectangle(&mut planes.y, band, y, imgproc::FILLED, imgproc::LINE_8, 0)?;
        }
        let half = Rect::new(rect.x / 2, rect.y / 2, rect.width / 2, rect.height / 2);
        for band in outline(half, BOX_THICKNESS / 2) {
            imgproc::rectangle(&mut planes.u, band, u, imgproc::FILLED, imgproc::LINE_8, 0)?;
            imgproc::rectangle(&mut planes.v, band, v, imgproc::FILLED, imgproc::LINE_8, 0)?;
        }
    }
    Ok(())
}

/// The four bands of `width` pixels just inside `rect`'s edges.
fn outline(rect: Rect, width: i32) -> [Rect; 4] {
    let (w, h) = (width.min(rect.width), width.min(rect.height));
    [
        Rect::new(rect.x, rect.y, rect.width, h),
        Rect::new(rect.x, rect.y + rect.height - h, rect.width, h),
        Rect::new(rect.x, rect.y, w, rect.height),
        Rect::new(rect.x + rect.width - w, rect.y, w, rect.height),
    ]
}

/// `rect` grown to even edges and clipped to the frame; `None` when nothing of it is inside.
fn on_even_edges(rect: Rect, size: Size) -> Option<Rect> {
    let left = (rect.x.max(0)) & !1;
    let top = (rect.y.max(0)) & !1;
    let right = ((rect.x + rect.width).min(size.width) + 1) & !1;
    let bottom = ((rect.y + rect.height).min(size.height) + 1) & !1;
    (right > left && bottom > top).then(|| Rect::new(left, top, right - left, bottom - top))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::Vec3b;
    use opencv::prelude::*;

    #[test]
    fn boxes_are_drawn_green_on_their_outline_only() {
        let grey = crate::i420::Colorimetry::default().yuv_of([80, 80, 80]);
        let mut image = I420Image::filled(Size::new(160, 120), grey).unwrap();
        // Odd edges: every outline pixel is still wholly green.
        draw_boxes(&mut image, &[Rect::new(11, 9, 99, 101)]).unwrap();
        let bgr = image.to_bgr().unwrap();
        let green = |row, col| {
            let [b, g, r] = bgr.at_2d::<Vec3b>(row, col).unwrap().0;
            b < 20 && g > 235 && r < 20
        };
        for (row, col) in [
            (8, 50),
            (9, 50),
            (60, 10),
            (60, 11),
            (109, 60),
            (60, 108),
            (60, 109),
        ] {
            assert!(green(row, col), "({row}, {col}) is not box green");
        }
        assert_eq!(bgr.at_2d::<Vec3b>(60, 60).unwrap().0, [80, 80, 80]);
        assert_eq!(bgr.at_2d::<Vec3b>(60, 12).unwrap().0, [80, 80, 80]);
        assert_eq!(bgr.at_2d::<Vec3b>(7, 50).unwrap().0, [80, 80, 80]);
    }

    #[test]
    fn boxes_reaching_past_the_frame_are_clipped() {
        let size = Size::new(160, 120);
        assert_eq!(
            on_even_edges(Rect::new(-5, 100, 400, 40), size),
            Some(Rect::new(0, 100, 160, 20))
        );
        assert_eq!(on_even_edges(Rect::new(170, 10, 10, 10), size), None);
    }
}
