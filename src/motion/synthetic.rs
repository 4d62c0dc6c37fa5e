//! Synthetic frames for the motion tests: a textured still scene, optionally with a white box.

use opencv::core::{CV_8UC3, Mat, Point, Rect, Scalar};
use opencv::imgproc;

/// 1280x720 BGR: a grey scene with dark diagonal lines; with `box_x`, a 150x150 white box at
/// (`box_x`, 300).
pub fn scene(box_x: Option<i32>) -> Mat {
    let mut image =
        Mat::new_rows_cols_with_default(720, 1280, CV_8UC3, Scalar::new(90.0, 100.0, 110.0, 0.0))
            .unwrap();
    // A static texture, so the background is not uniform.
    for i in 0..16 {
        imgproc::line(
            &mut image,
            Point::new(i * 80, 0),
            Point::new(i * 80 + 200, 720),
            Scalar::new(30.0, 30.0, 30.0, 0.0),
            3,
            imgproc::LINE_8,
            0,
        )
        .unwrap();
    }
    if let Some(x) = box_x {
        imgproc::rectangle(
            &mut image,
            Rect::new(x, 300, 150, 150),
            Scalar::new(250.0, 250.0, 250.0, 0.0),
            -1,
            imgproc::LINE_8,
            0,
        )
        .unwrap();
    }
    image
}
