//! Drawing the detector's boxes onto the frames that go into a clip.

use opencv::core::{Mat, Rect, Scalar};
use opencv::imgproc;

/// The annotation colour, BGR green, as the original service drew it.
pub const BOX_BGR: [u8; 3] = [0, 255, 0];
const BOX_THICKNESS: i32 = 2;

/// Draws a rectangle around each moving region, in place.
pub fn draw_boxes(image: &mut Mat, boxes: &[Rect]) -> opencv::Result<()> {
    let colour = Scalar::new(
        f64::from(BOX_BGR[0]),
        f64::from(BOX_BGR[1]),
        f64::from(BOX_BGR[2]),
        0.0,
    );
    for rect in boxes {
        imgproc::rectangle(image, *rect, colour, BOX_THICKNESS, imgproc::LINE_8, 0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{CV_8UC3, Vec3b};
    use opencv::prelude::*;

    #[test]
    fn boxes_are_drawn_green_on_their_outline_only() {
        let mut image =
            Mat::new_rows_cols_with_default(120, 160, CV_8UC3, Scalar::all(80.0)).unwrap();
        draw_boxes(&mut image, &[Rect::new(10, 10, 100, 100)]).unwrap();
        assert_eq!(image.at_2d::<Vec3b>(10, 50).unwrap().0, BOX_BGR);
        assert_eq!(image.at_2d::<Vec3b>(60, 60).unwrap().0, [80, 80, 80]);
    }
}
