//! A decoded picture as the camera's decoder gives it: I420 (BT.601 YUV 4:2:0), the Y, U and V planes
//! packed one after the other in one single-channel OpenCV image of 1.5 x the height.
//!
//! Frames stay in this form from the decoder to the encoder: the detector reads the Y plane as its grey
//! image, the boxes are drawn into the planes, and x264 takes the planes as they are. Converting to BGR
//! and back cost more than detection itself (docs/PERFORMANCE.md); only the snapshot JPEG converts.
//!
//! A decoded picture is not copied while it is only read: the image reads libavcodec's frame in place
//! (which the decoder may still use as a reference picture), so a frame that is only analysed (every
//! frame while nothing moves) is never copied. Drawing into it or handing it to the encoder packs a copy
//! first: the encoder holds frames for a while, and the decoder's pool would grow by what it holds.

use std::ffi::c_void;

use ffmpeg_next as ffmpeg;
use gstreamer as gst;
use opencv::core::{CV_8UC1, CV_8UC3, Mat, Scalar, Size};
use opencv::imgproc;
use opencv::prelude::*;

/// One I420 picture of even width and height.
pub struct I420Image {
    /// Rows: `height` of Y, then `height / 4` of U and of V (two chroma rows a row), `width` bytes each.
    /// Empty while the picture is read in the decoder's frame.
    planes: Mat,
    /// The decoder's frame, while the picture is read in place.
    decoded: Option<DecodedPlanes>,
    size: Size,
    colorimetry: Colorimetry,
}

/// A decoder's frame read in place: its Y plane as a read-only OpenCV view, and the frame that holds
/// the bytes (declared after the view, so the view is dropped first).
struct DecodedPlanes {
    luma: Mat,
    frame: ffmpeg::frame::Video,
}

/// How YUV values map to colours: cameras send BT.601 or BT.709, in limited (16-235) or full ("JPEG",
/// 0-255) range. Frames keep the camera's values and the clips are marked with its colorimetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Colorimetry {
    pub matrix: ColourMatrix,
    pub full_range: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColourMatrix {
    #[default]
    Bt601,
    Bt709,
}

impl Colorimetry {
    /// GStreamer's name for it (`range:matrix:transfer:primaries` where it has no short name).
    pub fn gst_name(self) -> &'static str {
        match (self.matrix, self.full_range) {
            (ColourMatrix::Bt601, false) => "bt601",
            (ColourMatrix::Bt709, false) => "bt709",
            (ColourMatrix::Bt601, true) => "1:4:0:0",
            (ColourMatrix::Bt709, true) => "1:3:0:0",
        }
    }

    /// A BGR colour as Y, U, V.
    pub fn yuv_of(self, [b, g, r]: [u8; 3]) -> [u8; 3] {
        let (kr, kb) = match self.matrix {
            ColourMatrix::Bt601 => (0.299, 0.114),
            ColourMatrix::Bt709 => (0.2126, 0.0722),
        };
        let [b, g, r] = [b, g, r].map(|c| f64::from(c) / 255.0);
        let luma = kr * r + (1.0 - kr - kb) * g + kb * b;
        let pb = (b - luma) / (2.0 * (1.0 - kb));
        let pr = (r - luma) / (2.0 * (1.0 - kr));
        let (y_span, y_base, c_span) = if self.full_range {
            (255.0, 0.0, 255.0)
        } else {
            (219.0, 16.0, 224.0)
        };
        [
            y_base + y_span * luma,
            128.0 + c_span * pb,
            128.0 + c_span * pr,
        ]
        .map(|c| c.round().clamp(0.0, 255.0) as u8)
    }
}

/// The three planes of an image, as one-channel images over its bytes.
pub struct PlanesMut<'a> {
    pub y: opencv::boxed_ref::BoxedRefMut<'a, Mat>,
    pub u: opencv::boxed_ref::BoxedRefMut<'a, Mat>,
    pub v: opencv::boxed_ref::BoxedRefMut<'a, Mat>,
}

impl I420Image {
    /// A picture of `size` in one colour, given as Y, U, V.
    pub fn filled(size: Size, [y, u, v]: [u8; 3]) -> opencv::Result<Self> {
        check_even(size)?;
        let mut image = Self {
            planes: Mat::new_rows_cols_with_default(
                size.height * 3 / 2,
                size.width,
                CV_8UC1,
                Scalar::all(0.0),
            )?,
            decoded: None,
            size,
            colorimetry: Colorimetry::default(),
        };
        let planes = image.planes_mut()?;
        for (mut plane, value) in [(planes.y, y), (planes.u, u), (planes.v, v)] {
            plane.set_to_def(&Scalar::all(f64::from(value)))?;
        }
        Ok(image)
    }

    /// Takes ownership of packed planes: `planes` must be `size.height * 3 / 2` rows of `size.width`
    /// bytes, one channel, continuous.
    pub fn from_packed(size: Size, planes: Mat) -> opencv::Result<Self> {
        check_even(size)?;
        let expected = Size::new(size.width, size.height * 3 / 2);
        if planes.size()? != expected || planes.typ() != CV_8UC1 || !planes.is_continuous() {
            return Err(opencv::Error::new(
                opencv::core::StsBadArg,
                format!("I420 planes of {size:?} must be one continuous {expected:?} byte image"),
            ));
        }
        Ok(Self {
            planes,
            decoded: None,
            size,
            colorimetry: Colorimetry::default(),
        })
    }

    /// Reads a decoder's I420 frame in place (libav's YUV420P: three planes, each row of its own
    /// length).
    pub fn from_decoded(frame: ffmpeg::frame::Video) -> opencv::Result<Self> {
        let size = Size::new(frame.width() as i32, frame.height() as i32);
        check_even(size)?;
        let (w, h) = (size.width as usize, size.height as usize);
        let fits = |plane: usize, width: usize, height: usize| {
            frame.planes() > plane
                && frame.stride(plane) >= width
                && frame.data(plane).len() >= frame.stride(plane) * height
        };
        if !(fits(0, w, h) && fits(1, w / 2, h / 2) && fits(2, w / 2, h / 2)) {
            return Err(opencv::Error::new(
                opencv::core::StsBadArg,
                format!(
                    "a decoded frame of {:?} does not hold I420 planes of {size:?}",
                    frame.format()
                ),
            ));
        }
        let luma = frame.data(0);
        // SAFETY: the Y plane is `h` rows `stride` bytes apart, at least `w` bytes each (checked above),
        // in libav's reference-counted buffer that `frame` holds: it stays in place and unchanged (the
        // decoder writes a picture only before handing it out) for as long as `frame` lives, and the
        // image drops the view first. A Mat over external data never frees or reallocates it. Nothing
        // writes through the view: `decoded` is private, and `planes_mut` and `into_buffer` replace it
        // with a packed copy first.
        let luma = unsafe {
            Mat::new_rows_cols_with_data_unsafe(
                size.height,
                size.width,
                CV_8UC1,
                luma.as_ptr().cast_mut().cast::<c_void>(),
                frame.stride(0),
            )?
        };
        Ok(Self {
            planes: Mat::default(),
            decoded: Some(DecodedPlanes { luma, frame }),
            size,
            colorimetry: Colorimetry::default(),
        })
    }

    /// Whether the picture is still read in the decoder's frame (not copied).
    #[cfg(test)]
    pub fn is_in_decoder_frame(&self) -> bool {
        self.decoded.is_some()
    }

    /// The picture's colorimetry (BT.601 limited range unless set).
    pub fn colorimetry(&self) -> Colorimetry {
        self.colorimetry
    }

    pub fn set_colorimetry(&mut self, colorimetry: Colorimetry) {
        self.colorimetry = colorimetry;
    }

    /// BT.601 limited range, as OpenCV converts (tests and synthetic scenes).
    pub fn from_bgr(bgr: &Mat) -> opencv::Result<Self> {
        let size = bgr.size()?;
        check_even(size)?;
        let mut planes = Mat::default();
        imgproc::cvt_color_def(bgr, &mut planes, imgproc::COLOR_BGR2YUV_I420)?;
        Self::from_packed(size, planes)
    }

    /// The picture in BGR (for the snapshot JPEG), read in its own colorimetry with the `yuv` crate
    /// (OpenCV's conversion knows only BT.601 limited range: a full-range camera's snapshot came out
    /// with crushed blacks and blown whites).
    pub fn to_bgr(&self) -> opencv::Result<Mat> {
        let (w, h) = (self.size.width as u32, self.size.height as u32);
        let [(y, y_stride), (u, u_stride), (v, v_stride)] = self.plane_rows()?;
        let planar = yuv::YuvPlanarImage {
            y_plane: y,
            y_stride: y_stride as u32,
            u_plane: u,
            u_stride: u_stride as u32,
            v_plane: v,
            v_stride: v_stride as u32,
            width: w,
            height: h,
        };
        let mut bgr = Mat::new_size_with_default(self.size, CV_8UC3, Scalar::all(0.0))?;
        let range = if self.colorimetry.full_range {
            yuv::YuvRange::Full
        } else {
            yuv::YuvRange::Limited
        };
        let matrix = match self.colorimetry.matrix {
            ColourMatrix::Bt601 => yuv::YuvStandardMatrix::Bt601,
            ColourMatrix::Bt709 => yuv::YuvStandardMatrix::Bt709,
        };
        yuv::yuv420_to_bgr(&planar, bgr.data_bytes_mut()?, w * 3, range, matrix)
            .map_err(|e| opencv::Error::new(opencv::core::StsError, format!("I420 to BGR: {e}")))?;
        Ok(bgr)
    }

    pub fn size(&self) -> Size {
        self.size
    }

    /// Bytes the picture holds.
    pub fn byte_len(&self) -> usize {
        self.luma_len() * 3 / 2
    }

    /// The packed planes as a GStreamer buffer for the encoder, which takes them over. A picture still
    /// in the decoder's frame is copied out of it first: the decoder's frames come from a pool that
    /// keeps every buffer it ever had to hand out, so lending them to the encoder too would leave that
    /// many more pictures in it for good, besides the copies of the frames with boxes (measured with
    /// GStreamer's decoder: recording 1080p with boxes on some frames peaked 7 MiB higher that way).
    pub fn into_buffer(mut self) -> opencv::Result<gst::Buffer> {
        self.own_planes()?;
        Ok(gst::Buffer::from_slice(OwnedPlanes(self.planes)))
    }

    /// A copy (the snapshot keeps one frame while the clip's frames go on to the encoder).
    pub fn try_clone(&self) -> opencv::Result<Self> {
        Ok(Self {
            planes: self.packed_planes()?,
            decoded: None,
            size: self.size,
            colorimetry: self.colorimetry,
        })
    }

    /// The Y plane: the picture in grey, without a copy.
    pub fn luma(&self) -> opencv::Result<opencv::boxed_ref::BoxedRef<'_, Mat>> {
        let rows = opencv::core::Range::new(0, self.size.height)?;
        match &self.decoded {
            Some(decoded) => decoded.luma.row_range(&rows),
            None => self.planes.row_range(&rows),
        }
    }

    /// The Y, U and V planes, writable, each at its own size (the chroma planes at half width and
    /// height).
    /// A picture still in the decoder's buffer is copied out of it first.
    pub fn planes_mut(&mut self) -> opencv::Result<PlanesMut<'_>> {
        self.own_planes()?;
        let (w, h) = (self.size.width, self.size.height);
        let luma_len = self.luma_len();
        let bytes = self.planes.data_bytes_mut()?;
        let (y, chroma) = bytes.split_at_mut(luma_len);
        let (u, v) = chroma.split_at_mut(luma_len / 4);
        Ok(PlanesMut {
            y: Mat::new_rows_cols_with_data_mut(h, w, y)?,
            u: Mat::new_rows_cols_with_data_mut(h / 2, w / 2, u)?,
            v: Mat::new_rows_cols_with_data_mut(h / 2, w / 2, v)?,
        })
    }

    /// Copies the planes out of the decoder's frame, if they are still in it (and gives it back).
    fn own_planes(&mut self) -> opencv::Result<()> {
        if self.decoded.is_some() {
            self.planes = self.packed_planes()?;
            self.decoded = None;
        }
        Ok(())
    }

    /// The Y, U and V planes, each with the distance between its rows in bytes.
    fn plane_rows(&self) -> opencv::Result<[(&[u8], usize); 3]> {
        let width = self.size.width as usize;
        Ok(match &self.decoded {
            Some(decoded) => {
                [0, 1, 2].map(|plane| (decoded.frame.data(plane), decoded.frame.stride(plane)))
            }
            None => {
                let luma_len = self.luma_len();
                let (y, chroma) = self.planes.data_bytes()?.split_at(luma_len);
                let (u, v) = chroma.split_at(luma_len / 4);
                [(y, width), (u, width / 2), (v, width / 2)]
            }
        })
    }

    /// A packed copy of the planes, row by row (the bytes are not zeroed first, which cost as much as
    /// the copy itself).
    fn packed_planes(&self) -> opencv::Result<Mat> {
        let (w, h) = (self.size.width as usize, self.size.height as usize);
        let mut packed = Mat::default();
        // SAFETY: `create` allocates heap bytes without initialising them (the memory comes from
        // OpenCV's allocator, so it holds some values, never undefined ones for u8); the loop below
        // overwrites all of them before the Mat is used.
        unsafe { packed.create_rows_cols(self.size.height * 3 / 2, self.size.width, CV_8UC1)? };
        let out = packed.data_bytes_mut()?;
        let mut offset = 0;
        let shapes = [(w, h), (w / 2, h / 2), (w / 2, h / 2)];
        for ((data, stride), (width, height)) in self.plane_rows()?.into_iter().zip(shapes) {
            for row in 0..height {
                out[offset..offset + width]
                    .copy_from_slice(&data[row * stride..row * stride + width]);
                offset += width;
            }
        }
        Ok(packed)
    }

    fn luma_len(&self) -> usize {
        self.size.width as usize * self.size.height as usize
    }
}

/// Packed planes owned by the GStreamer buffer that carries them to the encoder (freed when the encoder
/// is done with them).
struct OwnedPlanes(Mat);

impl AsRef<[u8]> for OwnedPlanes {
    fn as_ref(&self) -> &[u8] {
        // An I420Image's planes are one continuous byte image (checked when it was made).
        self.0.data_bytes().unwrap_or_default()
    }
}

/// Where the planes of a packed picture of `size` start, in bytes, and how long their rows are: the
/// layout an `I420Image` keeps (a decoder's buffer is used in place only when it has it, and the
/// writer describes it to the encoder).
pub fn packed_layout(size: Size) -> ([usize; 3], [i32; 3]) {
    let luma = size.width as usize * size.height as usize;
    let half = size.width / 2;
    ([0, luma, luma * 5 / 4], [size.width, half, half])
}

fn check_even(size: Size) -> opencv::Result<()> {
    if size.width <= 0 || size.height <= 0 || size.width % 2 != 0 || size.height % 2 != 0 {
        return Err(opencv::Error::new(
            opencv::core::StsBadSize,
            format!(
                "I420 needs an even width and height; the picture is {}x{}",
                size.width, size.height
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{CV_8UC3, Vec3b};

    #[test]
    fn bgr_survives_the_round_trip_and_the_planes_are_where_they_say() {
        let bgr =
            Mat::new_rows_cols_with_default(48, 64, CV_8UC3, Scalar::new(0.0, 255.0, 0.0, 0.0))
                .unwrap();
        let mut image = I420Image::from_bgr(&bgr).unwrap();
        assert_eq!(image.size(), Size::new(64, 48));
        assert_eq!(image.byte_len(), 64 * 48 * 3 / 2);
        let yuv = Colorimetry::default().yuv_of([0, 255, 0]);
        assert_eq!(*image.luma().unwrap().at_2d::<u8>(47, 63).unwrap(), yuv[0]);
        let planes = image.planes_mut().unwrap();
        assert_eq!(planes.u.size().unwrap(), Size::new(32, 24));
        let near = |a: u8, b: u8| (i32::from(a) - i32::from(b)).abs() <= 1;
        assert!(near(*planes.u.at_2d::<u8>(23, 31).unwrap(), yuv[1]));
        assert!(near(*planes.v.at_2d::<u8>(0, 0).unwrap(), yuv[2]));
        let back = image.to_bgr().unwrap();
        let [b, g, r] = back.at_2d::<Vec3b>(20, 20).unwrap().0;
        assert!(b < 4 && g > 250 && r < 4, "{b} {g} {r}");
    }

    #[test]
    fn colours_are_converted_in_each_matrix_and_range() {
        let green = [0, 255, 0];
        let of = |matrix, full_range| Colorimetry { matrix, full_range }.yuv_of(green);
        assert_eq!(of(ColourMatrix::Bt601, false), [145, 54, 34]);
        assert_eq!(of(ColourMatrix::Bt709, false), [173, 42, 26]);
        assert_eq!(of(ColourMatrix::Bt601, true), [150, 44, 21]);
        assert_eq!(Colorimetry::default().yuv_of([128; 3]), [126, 128, 128]);
    }

    /// A full-range or BT.709 camera's colours come back as they were (read as BT.601 limited range, as
    /// OpenCV reads every picture, a full-range grey 40 became 28).
    #[test]
    fn pictures_are_read_back_in_their_own_colorimetry() {
        for colorimetry in [
            Colorimetry::default(),
            Colorimetry {
                matrix: ColourMatrix::Bt709,
                full_range: true,
            },
            Colorimetry {
                matrix: ColourMatrix::Bt601,
                full_range: true,
            },
        ] {
            for colour in [[40, 40, 40], [30, 200, 60], [230, 230, 230]] {
                let mut image =
                    I420Image::filled(Size::new(32, 16), colorimetry.yuv_of(colour)).unwrap();
                image.set_colorimetry(colorimetry);
                let bgr = image.to_bgr().unwrap();
                let got = bgr.at_2d::<opencv::core::Vec3b>(8, 16).unwrap().0;
                let close = got
                    .iter()
                    .zip(colour)
                    .all(|(g, c)| (i32::from(*g) - i32::from(c)).abs() <= 3);
                assert!(close, "{colorimetry:?}: {colour:?} came back as {got:?}");
            }
        }
    }

    #[test]
    fn odd_sizes_are_refused_with_the_size() {
        let error = I420Image::filled(Size::new(641, 360), [16, 128, 128])
            .err()
            .unwrap();
        assert!(error.message.contains("641x360"), "{error}");
    }
}
