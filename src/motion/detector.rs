//! The background-subtraction detector itself, on a reduced grayscale frame.

use opencv::core::{self, Mat, Point, Ptr, Rect, Size, ToInputArray, Vector};
use opencv::imgproc;
use opencv::prelude::*;
use opencv::video::{self, BackgroundSubtractorMOG2};

use crate::config::MotionSettings;
use crate::stream::StreamInfo;

/// Height of the frame the detector works on (Frigate uses 100-180 px); larger frames are reduced to it.
const DETECTION_HEIGHT: i32 = 180;
/// After a (re)connect the background is only trained, for this long (and at least `MIN_WARMUP_FRAMES`).
/// It starts as the per-pixel median of those frames, so something that moves through them does not
/// become part of it (MOG2 fed those frames directly keeps the mover as a second background mode, and
/// is blind along its path for half a minute).
const WARMUP_SECONDS: f64 = 1.0;
const MIN_WARMUP_FRAMES: u32 = 5;
/// The background model's memory: after warm-up it learns at 1 / (HISTORY_SECONDS x fps) per analysed
/// frame, so its time constants in seconds do not depend on how many frames a second it sees. 33 s is the
/// original service's 500 frames at 15 fps; a stopped object stays "motion" for about a tenth of it.
const HISTORY_SECONDS: f64 = 500.0 / 15.0;
/// When more than this share of the frame changes at once, it is the light (a lamp, the sun behind a
/// cloud, the camera's IR switch), not something moving: the background is learned afresh.
const LIGHTING_CHANGE_SHARE: f64 = 0.5;

pub struct MotionDetector {
    subtractor: Ptr<BackgroundSubtractorMOG2>,
    /// Full-resolution pixels per detection pixel, along each axis.
    scale: f64,
    detection_size: Size,
    min_area_scaled: f64,
    warmup_left: u32,
    warmup_frames: u32,
    /// MOG2's history in analysed frames; the steady learning rate is its inverse.
    history: i32,
    /// Times the background was learned afresh after a lighting change.
    pub lighting_changes: u64,
    /// The reduced gray frames of the warm-up so far.
    warmup_grays: Vec<Mat>,
    /// `MOTION_MASK` at the detection size: 255 where motion is ignored.
    ignored: Option<Mat>,
    /// Pixels of the detection frame outside the mask (the lighting guard's whole).
    unmasked_pixels: f64,
    /// The reduction's buffers, reused frame to frame: the halvings of the grey frame.
    halving_sizes: Vec<Size>,
    halved: Vec<Mat>,
    gray: Mat,
    mask: Mat,
    cleaned: Mat,
}

impl MotionDetector {
    /// A detector for frames of `info.size` handed to `detect` at `info.fps` frames a second.
    pub fn new(settings: &MotionSettings, info: StreamInfo) -> opencv::Result<Self> {
        let full = info.size;
        let history = ((HISTORY_SECONDS * info.fps).round() as i32).max(1);
        let warmup_frames = MIN_WARMUP_FRAMES.max((WARMUP_SECONDS * info.fps).round() as u32);
        let scale = if full.height > DETECTION_HEIGHT {
            f64::from(full.height) / f64::from(DETECTION_HEIGHT)
        } else {
            1.0
        };
        let detection_size = Size::new(
            ((f64::from(full.width) / scale).round() as i32).max(1),
            ((f64::from(full.height) / scale).round() as i32).max(1),
        );
        let mut halving_sizes = Vec::new();
        let mut size = full;
        // Halve while the height is an even multiple of the detection height (720 -> 360 -> 180; 1080 ->
        // 540, then 3x): each step then averages exactly what one INTER_AREA pass would.
        let even_multiple = |h: i32| h % (2 * detection_size.height) == 0;
        while scale > 1.0 && even_multiple(size.height) {
            size = Size::new(size.width / 2, size.height / 2);
            halving_sizes.push(size);
        }
        // The last step writes the detection frame itself (no copy of a finished one).
        if halving_sizes.last() == Some(&detection_size) {
            halving_sizes.pop();
        }
        let ignored = settings.mask.rasterise(detection_size)?;
        let mut unmasked_pixels =
            f64::from(detection_size.width) * f64::from(detection_size.height);
        if let Some(ignored) = &ignored {
            unmasked_pixels -= f64::from(core::count_non_zero(ignored)?);
        }
        Ok(Self {
            subtractor: video::create_background_subtractor_mog2(history, 16.0, false)?,
            scale,
            detection_size,
            min_area_scaled: settings.min_area / (scale * scale),
            warmup_left: warmup_frames,
            warmup_frames,
            history,
            lighting_changes: 0,
            warmup_grays: Vec::new(),
            ignored,
            unmasked_pixels,
            halved: vec![Mat::default(); halving_sizes.len()],
            halving_sizes,
            gray: Mat::default(),
            mask: Mat::default(),
            cleaned: Mat::default(),
        })
    }

    /// True while the background is still being learned.
    pub fn warming_up(&self) -> bool {
        self.warmup_left > 0
    }

    /// Moving regions of at least the minimum area, in full-resolution pixels, in a frame's grey image
    /// (the Y plane of an I420 frame).
    pub fn detect(&mut self, luma: &impl ToInputArray) -> opencv::Result<Vec<Rect>> {
        self.reduce(luma)?;
        if self.warming_up() {
            self.warmup_grays.push(self.gray.try_clone()?);
            self.warmup_left -= 1;
            if !self.warming_up() {
                self.seed_background()?;
            }
            return Ok(Vec::new());
        }
        video::BackgroundSubtractorMOG2Trait::apply(
            &mut self.subtractor,
            &self.gray,
            &mut self.mask,
            1.0 / f64::from(self.history),
        )?;
        if let Some(ignored) = &self.ignored {
            // Masked parts never count: not as motion, not towards the lighting guard's share.
            self.mask.set_to(&core::Scalar::all(0.0), ignored)?;
        }
        if self.foreground_share()? > LIGHTING_CHANGE_SHARE {
            self.relearn();
            return Ok(Vec::new());
        }
        self.boxes()
    }

    /// A fresh background model that starts from the per-pixel median of the warm-up frames.
    fn seed_background(&mut self) -> opencv::Result<()> {
        let frames = std::mem::take(&mut self.warmup_grays);
        let mut median = self.gray.try_clone()?;
        {
            let planes: Vec<&[u8]> = frames
                .iter()
                .map(|frame| frame.data_bytes())
                .collect::<opencv::Result<_>>()?;
            let out = median.data_bytes_mut()?;
            let mut values = Vec::with_capacity(planes.len());
            for (pixel, slot) in out.iter_mut().enumerate() {
                values.clear();
                values.extend(planes.iter().filter_map(|plane| plane.get(pixel)));
                values.sort_unstable();
                if let Some(middle) = values.get(values.len() / 2) {
                    *slot = *middle;
                }
            }
        }
        self.subtractor = video::create_background_subtractor_mog2(self.history, 16.0, false)?;
        // The first frame a fresh model sees becomes its background, at full weight.
        video::BackgroundSubtractorMOG2Trait::apply(
            &mut self.subtractor,
            &median,
            &mut self.mask,
            1.0,
        )
    }

    /// Contours of the foreground mask, cleaned up, of at least the minimum area, in full-resolution
    /// pixels.
    fn boxes(&mut self) -> opencv::Result<Vec<Rect>> {
        let no_kernel = Mat::default();
        let anchor = Point::new(-1, -1);
        let border = imgproc::morphology_default_border_value()?;
        imgproc::erode(
            &self.mask,
            &mut self.cleaned,
            &no_kernel,
            anchor,
            2,
            core::BORDER_CONSTANT,
            border,
        )?;
        imgproc::dilate(
            &self.cleaned,
            &mut self.mask,
            &no_kernel,
            anchor,
            2,
            core::BORDER_CONSTANT,
            border,
        )?;
        let mut contours = Vector::<Vector<Point>>::new();
        imgproc::find_contours_def(
            &self.mask,
            &mut contours,
            imgproc::RETR_EXTERNAL,
            imgproc::CHAIN_APPROX_SIMPLE,
        )?;
        let mut boxes = Vec::new();
        for contour in &contours {
            if imgproc::contour_area_def(&contour)? < self.min_area_scaled {
                continue;
            }
            boxes.push(self.to_full_resolution(imgproc::bounding_rect(&contour)?));
        }
        Ok(boxes)
    }

    /// The grey frame (the decoder's Y plane: no conversion) at the detection size, into `self.gray`:
    /// halved with INTER_AREA's fast 2x path while it is an even multiple of the detection size (720 ->
    /// 360 -> 180; 1080 -> 540), then INTER_AREA to it. The same average as one INTER_AREA reduction
    /// (within 0.1 grey level), for a fraction of the instructions.
    fn reduce(&mut self, luma: &impl ToInputArray) -> opencv::Result<()> {
        if self.scale <= 1.0 {
            return luma.input_array()?.copy_to(&mut self.gray);
        }
        let area = imgproc::INTER_AREA;
        for (i, &size) in self.halving_sizes.iter().enumerate() {
            match self.halved.split_at_mut(i) {
                ([.., previous], [next, ..]) => {
                    imgproc::resize(previous, next, size, 0.0, 0.0, area)?
                }
                (_, [first, ..]) => imgproc::resize(luma, first, size, 0.0, 0.0, area)?,
                (_, []) => unreachable!("one buffer per halving"),
            }
        }
        let to = self.detection_size;
        match self.halved.last() {
            Some(halved) => imgproc::resize(halved, &mut self.gray, to, 0.0, 0.0, area),
            None => imgproc::resize(luma, &mut self.gray, to, 0.0, 0.0, area),
        }
    }

    /// Share of the unmasked pixels that are foreground.
    fn foreground_share(&self) -> opencv::Result<f64> {
        if self.unmasked_pixels == 0.0 {
            return Ok(0.0);
        }
        Ok(f64::from(core::count_non_zero(&self.mask)?) / self.unmasked_pixels)
    }

    /// Learns the background afresh from the next frames, as after a reconnect.
    fn relearn(&mut self) {
        self.warmup_grays.clear();
        self.warmup_left = self.warmup_frames;
        self.lighting_changes += 1;
        tracing::debug!(
            changes = self.lighting_changes,
            "lighting changed over most of the frame; relearning the background"
        );
    }

    fn to_full_resolution(&self, rect: Rect) -> Rect {
        let s = self.scale;
        Rect::new(
            (f64::from(rect.x) * s).round() as i32,
            (f64::from(rect.y) * s).round() as i32,
            (f64::from(rect.width) * s).round() as i32,
            (f64::from(rect.height) * s).round() as i32,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::motion::synthetic::scene;

    /// What the detector is given: the frame's grey (luma) image.
    fn gray(bgr: &Mat) -> Mat {
        let mut gray = Mat::default();
        imgproc::cvt_color_def(bgr, &mut gray, imgproc::COLOR_BGR2GRAY).unwrap();
        gray
    }

    fn detector(min_area: f64) -> MotionDetector {
        masked_detector(min_area, "")
    }

    fn masked_detector(min_area: f64, mask: &str) -> MotionDetector {
        let info = StreamInfo::new(Size::new(1280, 720), 15.0);
        let settings = MotionSettings {
            min_area,
            mask: crate::motion::MotionMask::parse(mask).unwrap(),
            min_frames: 1,
        };
        MotionDetector::new(&settings, info).unwrap()
    }

    #[test]
    fn a_moving_box_is_found_where_it_is_and_a_still_scene_is_quiet() {
        let mut detector = detector(5000.0);
        while detector.warming_up() {
            detector.detect(&gray(&scene(None))).unwrap();
        }
        for _ in 0..10 {
            assert!(detector.detect(&gray(&scene(None))).unwrap().is_empty());
        }
        let boxes = detector.detect(&gray(&scene(Some(600)))).unwrap();
        assert_eq!(boxes.len(), 1, "{boxes:?}");
        let found = boxes[0];
        // The box is at x 600..750, y 300..450; allow the reduction's rounding.
        assert!(
            (found.x - 600).abs() <= 12 && (found.y - 300).abs() <= 12,
            "{found:?}"
        );
        assert!(
            (found.width - 150).abs() <= 24 && (found.height - 150).abs() <= 24,
            "{found:?}"
        );
    }

    #[test]
    fn something_moving_through_the_warm_up_does_not_become_background() {
        let mut detector = detector(5000.0);
        let mut x = 0;
        while detector.warming_up() {
            detector.detect(&gray(&scene(Some(x)))).unwrap();
            x += 80;
        }
        // Back where it passed during the warm-up, and then somewhere else: seen both times.
        for x in [160, 640] {
            let boxes = detector.detect(&gray(&scene(Some(x)))).unwrap();
            assert_eq!(boxes.len(), 1, "at x={x}: {boxes:?}");
            assert!((boxes[0].x - x).abs() <= 12, "{boxes:?}");
        }
    }

    #[test]
    fn regions_under_the_minimum_area_are_ignored() {
        let mut detector = detector(150.0 * 150.0 * 1.5);
        for _ in 0..30 {
            detector.detect(&gray(&scene(None))).unwrap();
        }
        assert!(
            detector
                .detect(&gray(&scene(Some(600))))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_sudden_lighting_change_relearns_the_background_instead_of_reporting_motion() {
        let mut detector = detector(5000.0);
        while detector.warming_up() {
            detector.detect(&gray(&scene(None))).unwrap();
        }
        let mut brighter = Mat::default();
        scene(None)
            .convert_to(&mut brighter, -1, 1.0, 70.0)
            .unwrap();
        assert!(detector.detect(&gray(&brighter)).unwrap().is_empty());
        assert_eq!(detector.lighting_changes, 1);
        while detector.warming_up() {
            assert!(detector.detect(&gray(&brighter)).unwrap().is_empty());
        }
        for _ in 0..10 {
            assert!(
                detector.detect(&gray(&brighter)).unwrap().is_empty(),
                "quiet after relearning"
            );
        }
        // And it still sees motion afterwards.
        let mut moved = Mat::default();
        scene(Some(600))
            .convert_to(&mut moved, -1, 1.0, 70.0)
            .unwrap();
        assert_eq!(detector.detect(&gray(&moved)).unwrap().len(), 1);
    }

    #[test]
    fn motion_inside_the_mask_is_ignored_and_outside_it_is_found() {
        // The mask covers x 0.4-0.7, y 0.3-0.7 of the frame: the box at x 600..750, y 300..450 is inside.
        let mut detector = masked_detector(5000.0, "0.4,0.3 0.7,0.3 0.7,0.7 0.4,0.7");
        while detector.warming_up() {
            detector.detect(&gray(&scene(None))).unwrap();
        }
        for x in [600, 560, 620, 600] {
            assert!(
                detector.detect(&gray(&scene(Some(x)))).unwrap().is_empty(),
                "motion at x {x} is inside the mask"
            );
            assert!(detector.detect(&gray(&scene(None))).unwrap().is_empty());
        }
        let boxes = detector.detect(&gray(&scene(Some(100)))).unwrap();
        assert_eq!(boxes.len(), 1, "outside the mask: {boxes:?}");
        assert!((boxes[0].x - 100).abs() <= 12, "{boxes:?}");
    }

    #[test]
    fn the_lighting_guard_counts_only_unmasked_pixels() {
        // Three quarters of the frame masked; the light changes in the unmasked quarter only. Over the
        // whole frame that is a quarter (not a lighting change), over what is watched it is all of it.
        let mut detector = masked_detector(5000.0, "0,0 0.75,0 0.75,1 0,1");
        while detector.warming_up() {
            detector.detect(&gray(&scene(None))).unwrap();
        }
        let mut lit = scene(None);
        let mut right = Mat::roi_mut(&mut lit, Rect::new(940, 0, 340, 720)).unwrap();
        let mut brighter = Mat::default();
        right.convert_to(&mut brighter, -1, 1.0, 70.0).unwrap();
        brighter.copy_to(&mut right).unwrap();
        assert!(detector.detect(&gray(&lit)).unwrap().is_empty());
        assert_eq!(detector.lighting_changes, 1);
    }

    #[test]
    fn the_cheap_reduction_matches_one_inter_area_reduction() {
        for size in [
            Size::new(1280, 720),
            Size::new(1920, 1080),
            Size::new(640, 480),
        ] {
            let mut frame = Mat::default();
            imgproc::resize(
                &gray(&scene(Some(600))),
                &mut frame,
                size,
                0.0,
                0.0,
                imgproc::INTER_LINEAR,
            )
            .unwrap();
            let info = StreamInfo::new(size, 5.0);
            let settings = MotionSettings {
                min_area: 5000.0,
                mask: crate::motion::MotionMask::default(),
                min_frames: 1,
            };
            let mut detector = MotionDetector::new(&settings, info).unwrap();
            detector.reduce(&frame).unwrap();
            let mut reference = Mat::default();
            imgproc::resize(
                &frame,
                &mut reference,
                detector.detection_size,
                0.0,
                0.0,
                imgproc::INTER_AREA,
            )
            .unwrap();
            assert_eq!(detector.gray.size().unwrap(), detector.detection_size);
            let mut diff = Mat::default();
            core::absdiff(&detector.gray, &reference, &mut diff).unwrap();
            let mut max = 0.0;
            let mean = core::mean_def(&diff).unwrap()[0];
            core::min_max_loc(&diff, None, Some(&mut max), None, None, &core::no_array()).unwrap();
            assert!(mean < 0.5 && max <= 8.0, "{size:?}: mean {mean}, max {max}");
        }
    }
}
