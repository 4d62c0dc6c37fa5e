//! The clip writer: H.264 in fragmented MP4 through OpenCV's GStreamer backend.
//!
//! `x264enc speed-preset=ultrafast` costs about a quarter of FFmpeg's `avc1` writer, and browsers play
//! H.264 in MP4 from a blob URL. Constant quality capped at 2 Mbit/s instead of a constant 2 Mbit/s:
//! 6.8 instead of 15.6 MB a minute for the benchmark's 720p scene and 6 % fewer instructions a frame. The MP4 is fragmented (a fragment a second), so a file cut off by a crash
//! or power cut is still readable up to its last fragment.
//!
//! The encoder wants I420. GStreamer's `videoconvert` from BGR cost 5.5 ms a 720p frame here, more than
//! decoding it; the `yuv` crate's SIMD conversion (AVX2/SSE on x86-64, NEON on aarch64) makes recording
//! 2.9 M instructions a 720p frame cheaper than OpenCV's `cvtColor(BGR2YUV_I420)` (7.0 M at 1080p), with
//! the same BT.601 limited-range matrix. The planes are
//! handed over as a one-channel image (the three planes one after the other, 1.5 x the height), which
//! `rawvideoparse` turns back into I420 of the real size, marked BT.601 (`videoconvert` marked HD clips
//! BT.709, which OpenCV-based players decoded with a slight colour cast). H.264 in 4:2:0
//! needs even sides; x264 always refused odd ones, now `create` says so.

use std::path::Path;

use opencv::core::{CV_8UC1, Mat, Scalar, Size};
use opencv::prelude::*;
use opencv::videoio::{self, VideoWriter};
use yuv::{BufferStoreMut, YuvConversionMode, YuvPlanarImageMut, YuvRange, YuvStandardMatrix};

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error(
        "the GStreamer H.264 writer did not open for {path} (are gstreamer1.0-plugins-ugly and -good installed, and the folder writable?)"
    )]
    NotOpened { path: String },
    #[error("a path with a double quote cannot be written: {0}")]
    UnsupportedPath(String),
    #[error("H.264 needs an even width and height; the stream is {}x{}", .0.width, .0.height)]
    OddSize(Size),
    #[error("converting a frame to I420: {0}")]
    Conversion(#[from] yuv::YuvError),
    #[error("OpenCV: {0}")]
    OpenCv(#[from] opencv::Error),
}

/// x264's constant-quality factor (its default CRF): a still scene costs few bits, and bits cost CPU.
const QUALITY: u32 = 23;
/// The cap on the bit rate, kbit/s (x264enc uses `bitrate` as the VBV maximum in quality mode): the
/// constant 2 Mbit/s the clips had before, so a clip is never larger than it was.
const MAX_KBITS: u32 = 2048;

pub struct ClipWriter {
    writer: VideoWriter,
    size: Size,
    /// The I420 frame handed to the writer, reused.
    i420: Mat,
}

impl ClipWriter {
    /// Creates `path` for frames of `size` at `fps`.
    pub fn create(path: &Path, size: Size, fps: f64) -> Result<Self, WriterError> {
        let location = path.to_string_lossy();
        if location.contains('"') {
            return Err(WriterError::UnsupportedPath(location.into_owned()));
        }
        let key_interval = (fps.round() as i32).max(1) * 2;
        if size.width % 2 != 0 || size.height % 2 != 0 {
            return Err(WriterError::OddSize(size));
        }
        // OpenCV's I420 planes are packed without padding: say where they are.
        let (num, den) = fraction(fps);
        let (w, h) = (size.width, size.height);
        let (luma, chroma) = (w * h, (w / 2) * (h / 2));
        let pipeline = format!(
            "appsrc ! rawvideoparse use-sink-caps=false format=i420 width={w} height={h} \
             plane-strides=\"<{w},{half},{half}>\" plane-offsets=\"<0,{luma},{v}>\" \
             framerate={num}/{den} colorimetry=bt601 \
             ! x264enc speed-preset=ultrafast tune=zerolatency key-int-max={key_interval} \
               pass=qual quantizer={QUALITY} bitrate={MAX_KBITS} \
             ! video/x-h264,profile=constrained-baseline ! h264parse \
             ! mp4mux fragment-duration=1000 ! filesink buffer-mode=unbuffered location=\"{location}\"",
            half = w / 2,
            v = luma + chroma,
        );
        // One channel, 1.5 x the height: the Y, U and V planes one after the other.
        let writer = VideoWriter::new_with_backend(
            &pipeline,
            videoio::CAP_GSTREAMER,
            0,
            fps,
            Size::new(w, h * 3 / 2),
            false,
        )?;
        if !writer.is_opened()? {
            return Err(WriterError::NotOpened {
                path: location.into_owned(),
            });
        }
        Ok(Self {
            writer,
            size,
            i420: Mat::new_rows_cols_with_default(h * 3 / 2, w, CV_8UC1, Scalar::all(0.0))?,
        })
    }

    pub fn size(&self) -> Size {
        self.size
    }

    /// Encodes one BGR frame of the writer's size.
    pub fn write(&mut self, image: &Mat) -> Result<(), WriterError> {
        bgr_to_i420(image, self.size, &mut self.i420)?;
        self.writer.write(&self.i420)?;
        Ok(())
    }

    /// Flushes and closes the file; the MP4 is complete on return.
    pub fn finish(mut self) -> Result<(), WriterError> {
        self.writer.release()?;
        Ok(())
    }
}

/// Converts a BGR frame of `size` into `i420` (the Y, U and V planes one after the other, packed), BT.601
/// limited range as OpenCV's `COLOR_BGR2YUV_I420` does.
fn bgr_to_i420(image: &Mat, size: Size, i420: &mut Mat) -> Result<(), WriterError> {
    // The frames the recorder hands over are whole images; a view into a larger one is copied first.
    let owned;
    let image = if image.is_continuous() {
        image
    } else {
        owned = image.try_clone()?;
        &owned
    };
    let (w, h) = (size.width as usize, size.height as usize);
    let bgr = image.data_bytes()?;
    let (y, chroma) = i420.data_bytes_mut()?.split_at_mut(w * h);
    let (u, v) = chroma.split_at_mut((w / 2) * (h / 2));
    let mut planes = YuvPlanarImageMut {
        y_plane: BufferStoreMut::Borrowed(y),
        y_stride: size.width as u32,
        u_plane: BufferStoreMut::Borrowed(u),
        u_stride: (size.width / 2) as u32,
        v_plane: BufferStoreMut::Borrowed(v),
        v_stride: (size.width / 2) as u32,
        width: size.width as u32,
        height: size.height as u32,
    };
    yuv::bgr_to_yuv420(
        &mut planes,
        bgr,
        (size.width * 3) as u32,
        YuvRange::Limited,
        YuvStandardMatrix::Bt601,
        YuvConversionMode::Balanced,
    )?;
    Ok(())
}

/// A frame rate as a GStreamer fraction, to the thousandth (29.97 is 29970/1000).
fn fraction(fps: f64) -> (u64, u64) {
    let num = (fps * 1000.0).round().max(1.0) as u64;
    let mut den = 1000_u64;
    let (mut a, mut b) = (num, den);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    den /= a;
    (num / a, den)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{CV_8UC3, Rect, Scalar, Vec3b};
    use opencv::imgproc;
    use opencv::videoio::VideoCapture;

    /// The SIMD conversion agrees with OpenCV's `COLOR_BGR2YUV_I420` (the matrix the clips are marked
    /// with) to within rounding: luma on a frame with sharp edges everywhere, chroma on a smooth one
    /// (OpenCV takes each 2x2 block's chroma from one pixel, the `yuv` crate averages the four).
    #[test]
    fn i420_planes_match_opencv_within_rounding() {
        let size = Size::new(64, 48);
        let luma = 64 * 48;
        for (sharp, planes) in [(true, 0..luma), (false, 0..luma * 3 / 2)] {
            let mut image = Mat::new_size_with_default(size, CV_8UC3, Scalar::all(0.0)).unwrap();
            for (row, pixels) in image
                .data_bytes_mut()
                .unwrap()
                .chunks_mut(64 * 3)
                .enumerate()
            {
                for (col, pixel) in pixels.chunks_mut(3).enumerate() {
                    let third = if sharp { (col * row) % 256 } else { col + row };
                    pixel.copy_from_slice(&[(col * 4) as u8, (row * 5) as u8, third as u8]);
                }
            }
            let mut ours =
                Mat::new_rows_cols_with_default(72, 64, CV_8UC1, Scalar::all(0.0)).unwrap();
            bgr_to_i420(&image, size, &mut ours).unwrap();
            let mut theirs = Mat::default();
            imgproc::cvt_color_def(&image, &mut theirs, imgproc::COLOR_BGR2YUV_I420).unwrap();
            let (ours, theirs) = (ours.data_bytes().unwrap(), theirs.data_bytes().unwrap());
            let worst = planes
                .map(|i| (i32::from(ours[i]) - i32::from(theirs[i])).abs())
                .max()
                .unwrap();
            assert!(
                worst <= 2,
                "sharp {sharp}: planes differ by up to {worst} levels"
            );
        }
    }

    #[test]
    fn frame_rates_become_gstreamer_fractions() {
        assert_eq!(fraction(15.0), (15, 1));
        assert_eq!(fraction(29.97), (2997, 100));
        assert_eq!(fraction(12.5), (25, 2));
    }

    /// Writes 20 frames with a colour scene and decodes them: count, size and colours survive (642x360:
    /// chroma rows that are not a multiple of 4 bytes, which GStreamer would pad by default).
    #[test]
    fn clips_decode_with_their_size_and_colours() {
        let dir = tempfile::tempdir().unwrap();
        for size in [Size::new(1280, 720), Size::new(642, 360)] {
            let path = dir.path().join(format!("{}.mp4", size.width));
            let mut image =
                Mat::new_size_with_default(size, CV_8UC3, Scalar::new(40.0, 60.0, 80.0, 0.0))
                    .unwrap();
            let patch = Rect::new(64, 64, 128, 128);
            imgproc::rectangle(
                &mut image,
                patch,
                Scalar::new(0.0, 255.0, 0.0, 0.0),
                -1,
                imgproc::LINE_8,
                0,
            )
            .unwrap();
            let mut writer = ClipWriter::create(&path, size, 15.0).unwrap();
            for _ in 0..20 {
                writer.write(&image).unwrap();
            }
            writer.finish().unwrap();

            let mut capture =
                VideoCapture::from_file(path.to_str().unwrap(), videoio::CAP_FFMPEG).unwrap();
            let (mut frames, mut frame) = (0, Mat::default());
            let mut last = Mat::default();
            while capture.read(&mut frame).unwrap() && !frame.empty() {
                frames += 1;
                last = frame.clone();
            }
            assert_eq!(frames, 20, "{size:?}");
            assert_eq!(last.size().unwrap(), size);
            let near = |got: [u8; 3], want: [u8; 3]| {
                got.iter()
                    .zip(want)
                    .all(|(g, w)| (i32::from(*g) - i32::from(w)).abs() <= 12)
            };
            let green = last.at_2d::<Vec3b>(128, 128).unwrap().0;
            let ground = last.at_2d::<Vec3b>(300, 400).unwrap().0;
            assert!(near(green, [0, 255, 0]), "{size:?}: green became {green:?}");
            assert!(
                near(ground, [40, 60, 80]),
                "{size:?}: background became {ground:?}"
            );
        }
    }

    #[test]
    fn odd_sizes_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let error = ClipWriter::create(&dir.path().join("odd.mp4"), Size::new(641, 360), 15.0)
            .err()
            .unwrap();
        assert!(error.to_string().contains("641x360"), "{error}");
    }
}
