//! `MOTION_MASK`: parts of the picture where motion is ignored (a tree in the wind, a road, a neighbour's
//! window), as polygons in fractions of the frame's width and height, so a mask survives a change of the
//! camera's resolution.
//!
//! Syntax: points `x,y` separated by spaces, polygons separated by `;`, e.g.
//! `0,0 0.3,0 0.3,0.2 0,0.2; 0.8,0.8 1,0.8 1,1`. `0,0` is the top-left corner, `1,1` the bottom-right.
//! The detector rasterises the polygons once per stream at its detection size ([`MotionMask::rasterise`]).

use opencv::core::{Mat, Point, Scalar, Size, Vector};
use opencv::imgproc;

/// Polygons of the frame to ignore; empty means the whole frame counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MotionMask {
    polygons: Vec<Vec<(f64, f64)>>,
}

impl MotionMask {
    /// Parses the `MOTION_MASK` syntax; an empty string is no mask. The error is one line saying what is
    /// wrong and where (without the variable's name).
    pub fn parse(raw: &str) -> Result<Self, String> {
        const SYNTAX: &str = "write points x,y (fractions 0..1 of width and height) separated by spaces, polygons separated by ';'";
        let mut polygons = Vec::new();
        for (index, text) in raw.split(';').enumerate() {
            let number = index + 1;
            if text.trim().is_empty() {
                continue;
            }
            let mut polygon = Vec::new();
            for token in text.split_whitespace() {
                let point = token
                    .split_once(',')
                    .and_then(|(x, y)| {
                        Some((x.trim().parse::<f64>().ok()?, y.trim().parse().ok()?))
                    })
                    .ok_or_else(|| {
                        format!("polygon {number}: {token:?} is not a point x,y; {SYNTAX}")
                    })?;
                for value in [point.0, point.1] {
                    if !(0.0..=1.0).contains(&value) {
                        return Err(format!(
                            "polygon {number}: {token:?} is outside the frame; coordinates are fractions \
                             from 0 to 1 of the frame's width and height"
                        ));
                    }
                }
                polygon.push(point);
            }
            if polygon.len() < 3 {
                return Err(format!(
                    "polygon {number} has {} point(s), a polygon needs at least 3; {SYNTAX}",
                    polygon.len()
                ));
            }
            polygons.push(polygon);
        }
        Ok(Self { polygons })
    }

    pub fn is_empty(&self) -> bool {
        self.polygons.is_empty()
    }

    /// The polygons filled at `size`: 255 inside them (ignored), 0 where motion counts. `None` when there
    /// is no mask.
    pub fn rasterise(&self, size: Size) -> opencv::Result<Option<Mat>> {
        if self.is_empty() {
            return Ok(None);
        }
        let mut ignored =
            Mat::new_size_with_default(size, opencv::core::CV_8UC1, Scalar::all(0.0))?;
        let polygons: Vector<Vector<Point>> = self
            .polygons
            .iter()
            .map(|polygon| {
                polygon
                    .iter()
                    .map(|&(x, y)| {
                        Point::new(
                            (x * f64::from(size.width)).round() as i32,
                            (y * f64::from(size.height)).round() as i32,
                        )
                    })
                    .collect()
            })
            .collect();
        imgproc::fill_poly_def(&mut ignored, &polygons, Scalar::all(255.0))?;
        Ok(Some(ignored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::prelude::*;

    #[test]
    fn the_documented_example_parses_into_two_polygons() {
        let mask = MotionMask::parse("0,0 0.3,0 0.3,0.2 0,0.2; 0.8,0.8 1,0.8 1,1").unwrap();
        assert_eq!(mask.polygons.len(), 2);
        assert_eq!(mask.polygons[0][1], (0.3, 0.0));
        assert_eq!(mask.polygons[1].len(), 3);
        // Extra spaces and a trailing ';' are fine; an empty value is no mask.
        assert_eq!(
            MotionMask::parse("  0,0  1,0 1,1 ;")
                .unwrap()
                .polygons
                .len(),
            1
        );
        assert!(MotionMask::parse("").unwrap().is_empty());
    }

    #[test]
    fn malformed_masks_say_what_is_wrong() {
        for (raw, expected) in [
            ("0,0 1,0", "polygon 1 has 2 point(s)"),
            ("0,0 1,0 1,1; 0,0 0.5,0.5", "polygon 2 has 2 point(s)"),
            ("0,0 1,0 1,1.5", "outside the frame"),
            ("0,0 -0.1,0 1,1", "outside the frame"),
            ("0,0 1;0 1,1", "is not a point"),
            ("0 0 1 0 1 1", "is not a point"),
            ("0,0 a,b 1,1", "is not a point"),
            ("0,0 NaN,0 1,1", "outside the frame"),
        ] {
            let error = MotionMask::parse(raw).unwrap_err();
            assert!(error.contains(expected), "{raw:?}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn rasterising_zeroes_the_polygons_at_any_size() {
        let mask = MotionMask::parse("0,0 0.5,0 0.5,1 0,1").unwrap();
        for size in [Size::new(320, 180), Size::new(640, 360)] {
            let ignored = mask.rasterise(size).unwrap().unwrap();
            assert_eq!(ignored.size().unwrap(), size);
            let w = size.width;
            assert_eq!(*ignored.at_2d::<u8>(10, 5).unwrap(), 255);
            assert_eq!(*ignored.at_2d::<u8>(10, w / 2 - 2).unwrap(), 255);
            assert_eq!(*ignored.at_2d::<u8>(10, w / 2 + 2).unwrap(), 0);
            assert_eq!(*ignored.at_2d::<u8>(size.height - 1, w - 1).unwrap(), 0);
        }
        assert!(
            MotionMask::default()
                .rasterise(Size::new(10, 10))
                .unwrap()
                .is_none()
        );
    }
}
