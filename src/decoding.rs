//! Decoding the camera's H.264/H.265 to I420 pictures with GStreamer: the pipeline tail the camera
//! reader and the pre-roll decoder share, a decoded sample as an `I420Image`, and `PacketDecoder`, which
//! decodes packets kept from earlier (the pre-roll) when a clip needs their pictures.

use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::{AppSink, AppSrc};
use gstreamer_video::prelude::*;
use gstreamer_video::{VideoFrameRef, VideoInfo, VideoMeta};
use opencv::core::Size;

use crate::gst_pipeline;
use crate::i420::{Colorimetry, ColourMatrix, I420Image, packed_layout};

/// Whatever the source gives, decoded to I420 for the appsink named `sink`. `sync=false`: frames are
/// handed out as they are decoded (a live camera paces itself; a file is read as fast as it decodes).
/// `videoconvert` passes I420 through untouched and converts only a decoder that gives something else.
pub const DECODE_TO_I420: &str = "decodebin name=decoder ! videoconvert \
     ! video/x-raw,format=I420 ! appsink name=sink sync=false max-buffers=2";

/// How often a wait for a picture looks at the pipeline's messages (errors, end of stream).
const POLL: Duration = Duration::from_millis(100);

/// Caps the decoder's threads in `pipeline` (the decoder is chosen by `decodebin` once the stream's
/// codec is known). libav's automatic count is one per core plus one, and every thread of its frame
/// threading holds its own frames: about 20 MB each at 1080p.
pub fn limit_decoder_threads(pipeline: &gst::Pipeline, threads: i32) {
    pipeline.connect_deep_element_added(move |_, _, element| {
        if element.has_property("max-threads") {
            element.set_property("max-threads", threads);
        }
    });
}

/// A decoded sample's picture, marked with the stream's colorimetry. The picture stays in the decoder's
/// buffer when its planes are packed as an `I420Image` keeps them (the usual case); a decoder that pads
/// its rows has them copied into a packed image.
pub fn image_from_sample(sample: &gst::Sample) -> Result<I420Image, String> {
    let caps = sample.caps().ok_or("a picture without caps")?;
    let video = VideoInfo::from_caps(caps).map_err(|e| e.to_string())?;
    let size = Size::new(video.width() as i32, video.height() as i32);
    let buffer = sample.buffer_owned().ok_or("a sample without a buffer")?;
    let mut image = if is_packed_i420(&buffer, &video) {
        I420Image::from_decoded(size, buffer).map_err(|e| e.to_string())?
    } else {
        copy_planes(&buffer, &video)?
    };
    image.set_colorimetry(colorimetry(&video));
    Ok(image)
}

/// Whether `buffer` holds I420 planes packed as an `I420Image` keeps them, in one block of memory.
fn is_packed_i420(buffer: &gst::BufferRef, video: &VideoInfo) -> bool {
    let size = Size::new(video.width() as i32, video.height() as i32);
    let (packed_offsets, packed_strides) = packed_layout(size);
    let packed = |offsets: &[usize], strides: &[i32]| {
        offsets.get(..3) == Some(&packed_offsets[..])
            && strides.get(..3) == Some(&packed_strides[..])
    };
    let layout_packed = match buffer.meta::<VideoMeta>() {
        Some(meta) => packed(meta.offset(), meta.stride()),
        None => packed(video.offset(), video.stride()),
    };
    layout_packed && buffer.n_memory() == 1 && buffer.size() >= packed_offsets[1] * 3 / 2
}

/// The planes of a decoded picture copied into a packed image, row by row (decoders pad rows to their
/// alignment).
fn copy_planes(buffer: &gst::BufferRef, video: &VideoInfo) -> Result<I420Image, String> {
    let size = Size::new(video.width() as i32, video.height() as i32);
    let frame = VideoFrameRef::from_buffer_ref_readable(buffer, video)
        .map_err(|_| "cannot map a decoded picture")?;
    let (w, h) = (size.width as usize, size.height as usize);
    let mut planes = Vec::with_capacity(3);
    for (plane, shape) in [(w, h), (w / 2, h / 2), (w / 2, h / 2)]
        .into_iter()
        .enumerate()
    {
        let data = frame.plane_data(plane as u32).map_err(|e| e.to_string())?;
        planes.push((data, frame.plane_stride()[plane] as usize, shape));
    }
    I420Image::from_writer(size, |out| {
        let mut offset = 0;
        for (data, stride, (width, height)) in planes {
            for row in 0..height {
                let from = row * stride;
                out[offset..offset + width].copy_from_slice(&data[from..from + width]);
                offset += width;
            }
        }
    })
    .map_err(|e| e.to_string())
}

/// The stream timestamp of a sample's buffer.
pub fn pts_of(sample: &gst::Sample) -> Option<gst::ClockTime> {
    sample.buffer().and_then(|buffer| buffer.pts())
}

/// A decoded picture with its stream timestamp.
pub type TimedPicture = (Option<gst::ClockTime>, I420Image);

fn timed_picture(sample: &gst::Sample) -> Result<TimedPicture, String> {
    Ok((pts_of(sample), image_from_sample(sample)?))
}

/// The stream's matrix and range as the decoder reports them (BT.601 for anything but BT.709).
pub fn colorimetry(video: &VideoInfo) -> Colorimetry {
    let colorimetry = video.colorimetry();
    Colorimetry {
        matrix: match colorimetry.matrix() {
            gstreamer_video::VideoColorMatrix::Bt709 => ColourMatrix::Bt709,
            _ => ColourMatrix::Bt601,
        },
        full_range: colorimetry.range() == gstreamer_video::VideoColorRange::Range0_255,
    }
}

/// What a wait for a decoded picture brought.
pub enum Pulled {
    Picture(gst::Sample),
    /// The stream ended (end of file, or the source stopped).
    Ended,
    /// Nothing within the wait.
    Nothing,
}

/// Waits up to `wait` for the next decoded sample at `sink`, watching the pipeline for errors (GStreamer's
/// message) and the end meanwhile.
pub fn pull(sink: &AppSink, pipeline: &gst::Pipeline, wait: Duration) -> Result<Pulled, String> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let poll = gst::ClockTime::from_nseconds(left.min(POLL).as_nanos() as u64);
        if let Some(sample) = sink.try_pull_sample(poll) {
            return Ok(Pulled::Picture(sample));
        }
        if let Some(failure) = gst_pipeline::first_error(pipeline) {
            return Err(failure);
        }
        if sink.is_eos() {
            return Ok(Pulled::Ended);
        }
        if left.is_zero() {
            return Ok(Pulled::Nothing);
        }
    }
}

/// A decoder fed packets by hand: `push` them in decode order, starting at a keyframe, and `next`
/// hands out the pictures with the timestamps the packets carried. One decoding thread: frame threading
/// would hold each picture back until more packets came, and the pre-roll is decoded beside the live
/// stream anyway.
pub struct PacketDecoder {
    pipeline: gst::Pipeline,
    source: AppSrc,
    sink: AppSink,
}

impl PacketDecoder {
    pub fn start() -> Result<Self, String> {
        let pipeline = gst_pipeline::launch(&format!(
            "appsrc name=source format=time ! {DECODE_TO_I420}"
        ))?;
        limit_decoder_threads(&pipeline, 1);
        let source = gst_pipeline::element_as(&pipeline, "source")?;
        let sink = gst_pipeline::element_as(&pipeline, "sink")?;
        // Dropping `decoder` stops the pipeline if it cannot play.
        let decoder = Self {
            pipeline,
            source,
            sink,
        };
        decoder
            .pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| e.to_string())?;
        Ok(decoder)
    }

    /// Queues one packet (its caps, from the camera's parser, tell the decoder the codec).
    pub fn push(&self, packet: &gst::Sample) -> Result<(), String> {
        self.source
            .push_sample(packet)
            .map(|_| ())
            .map_err(|flow| match gst_pipeline::first_error(&self.pipeline) {
                Some(failure) => failure,
                None => format!("the decoder refused a packet: {flow:?}"),
            })
    }

    /// The next decoded picture and its timestamp, waiting up to `wait`; `None` when none came by then.
    pub fn next(&self, wait: Duration) -> Result<Option<TimedPicture>, String> {
        match pull(&self.sink, &self.pipeline, wait)? {
            Pulled::Picture(sample) => timed_picture(&sample).map(Some),
            Pulled::Ended | Pulled::Nothing => Ok(None),
        }
    }

    /// Ends the stream and takes every picture the decoder still held back, within `timeout`. The
    /// decoder takes no packets after this.
    pub fn drain(&self, timeout: Duration) -> Result<Vec<TimedPicture>, String> {
        self.source
            .end_of_stream()
            .map_err(|flow| format!("the decoder refused the end of its stream: {flow:?}"))?;
        let deadline = Instant::now() + timeout;
        let mut pictures = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match pull(&self.sink, &self.pipeline, left)? {
                Pulled::Picture(sample) => pictures.push(timed_picture(&sample)?),
                Pulled::Ended => return Ok(pictures),
                Pulled::Nothing => {
                    return Err(format!(
                        "the decoder did not finish within {} s",
                        timeout.as_secs()
                    ));
                }
            }
        }
    }
}

impl Drop for PacketDecoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::Scalar;
    use opencv::prelude::*;

    /// Decodes a 64x48 H.264 stream of `count` frames as the camera reader does, and hands each sample
    /// to `take` while the pipeline still runs; the number of samples.
    fn decode(count: usize, mut take: impl FnMut(gst::Sample)) -> usize {
        let pipeline = gst_pipeline::launch(&format!(
            "videotestsrc num-buffers={count} ! video/x-raw,width=64,height=48,format=I420 \
             ! x264enc ! h264parse ! {DECODE_TO_I420}"
        ))
        .unwrap();
        let sink: AppSink = gst_pipeline::element_as(&pipeline, "sink").unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut taken = 0;
        while let Pulled::Picture(sample) = pull(&sink, &pipeline, Duration::from_secs(10)).unwrap()
        {
            take(sample);
            taken += 1;
        }
        pipeline.set_state(gst::State::Null).unwrap();
        taken
    }

    fn bytes_of(buffer: &gst::BufferRef) -> Vec<u8> {
        buffer.map_readable().unwrap().as_slice()[..64 * 48 * 3 / 2].to_vec()
    }

    fn address_of(buffer: &gst::BufferRef) -> *const u8 {
        buffer.map_readable().unwrap().as_slice().as_ptr()
    }

    #[test]
    fn a_decoded_picture_is_read_in_place_and_copied_to_be_drawn_into_or_encoded() {
        let mut index = 0;
        let taken = decode(4, |sample| {
            let decoded = sample.buffer().unwrap();
            let before = bytes_of(decoded);
            let mut image = image_from_sample(&sample).unwrap();
            assert!(image.is_in_decoder_buffer(), "the picture was copied");
            assert_eq!(image.size(), Size::new(64, 48));
            assert_eq!(
                image.luma().unwrap().data_bytes().unwrap(),
                &before[..64 * 48]
            );
            if index % 2 == 0 {
                // Handed to the encoder: the same bytes, in a buffer of its own.
                let buffer = image.into_buffer().unwrap();
                assert_ne!(address_of(&buffer), address_of(decoded));
                assert_eq!(bytes_of(&buffer), before);
            } else {
                // Drawn into: a copy, and the decoder's picture (maybe a reference) is left as it was.
                let mut planes = image.planes_mut().unwrap();
                planes.y.set_to_def(&Scalar::all(200.0)).unwrap();
                drop(planes);
                assert!(!image.is_in_decoder_buffer());
                assert_eq!(bytes_of(decoded), before);
                let handed_on = bytes_of(&image.into_buffer().unwrap());
                assert!(handed_on[..64 * 48].iter().all(|&y| y == 200));
                assert_eq!(handed_on[64 * 48..], before[64 * 48..]);
            }
            index += 1;
        });
        assert_eq!(taken, 4);
    }

    /// A decoder that pads its rows (here to 80 bytes, chroma to 40) has its planes copied, packed.
    #[test]
    fn padded_rows_are_copied_into_packed_planes() {
        gst::init().unwrap();
        let (w, h, stride) = (64_usize, 48_usize, 80_usize);
        let (luma, chroma) = (stride * h, stride / 2 * h / 2);
        let mut bytes = vec![0_u8; luma + 2 * chroma];
        for row in 0..h {
            bytes[row * stride..row * stride + w].fill(row as u8);
        }
        for row in 0..h / 2 {
            let u = luma + row * stride / 2;
            bytes[u..u + w / 2].fill(100 + row as u8);
            bytes[u + chroma..u + chroma + w / 2].fill(150 + row as u8);
        }
        let mut buffer = gst::Buffer::from_mut_slice(bytes);
        VideoMeta::add_full(
            buffer.get_mut().unwrap(),
            gstreamer_video::VideoFrameFlags::empty(),
            gstreamer_video::VideoFormat::I420,
            w as u32,
            h as u32,
            &[0, luma, luma + chroma],
            &[stride as i32, (stride / 2) as i32, (stride / 2) as i32],
        )
        .unwrap();
        let caps = VideoInfo::builder(gstreamer_video::VideoFormat::I420, w as u32, h as u32)
            .build()
            .unwrap()
            .to_caps()
            .unwrap();
        let sample = gst::Sample::builder().buffer(&buffer).caps(&caps).build();

        let mut image = image_from_sample(&sample).unwrap();
        assert!(!image.is_in_decoder_buffer());
        assert_eq!(*image.luma().unwrap().at_2d::<u8>(47, 63).unwrap(), 47);
        let planes = image.planes_mut().unwrap();
        assert_eq!(*planes.u.at_2d::<u8>(23, 31).unwrap(), 123);
        assert_eq!(*planes.v.at_2d::<u8>(5, 0).unwrap(), 155);
    }
}
