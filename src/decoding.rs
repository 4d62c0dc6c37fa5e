//! Decoding the camera's H.264/H.265 packets to I420 pictures with libavcodec: the pipeline tail that
//! hands the camera reader the parsed packets, and `Decoder` (one libavcodec decoder fed by hand), which
//! decodes the camera's stream as it comes and, in a second one, the packets kept for a pre-roll when a
//! clip needs their pictures.
//!
//! GStreamer still receives and parses the stream (`rtspsrc`/`filesrc`, `parsebin`, the codec's parser),
//! but decoding is libavcodec's own API, not gst-libav's `avdec_h264`: that plugin links libavformat and
//! libavfilter, whose library trees (flite's voices, librsvg, placebo, Vulkan...) took 18-21 MiB of every
//! process that decodes (docs/PERFORMANCE.md, sixth round), and it copied each picture out of libav's
//! frame into a buffer of its own. A decoded picture is now libav's frame itself, read in place
//! (`I420Image`).

use std::collections::VecDeque;
use std::sync::Once;
use std::time::{Duration, Instant};

use ffmpeg_next as ffmpeg;
use ffmpeg_next::format::Pixel;
use gstreamer as gst;
use gstreamer_app::AppSink;

use opencv::core::Size;

use crate::gst_pipeline;
use crate::i420::{Colorimetry, ColourMatrix, I420Image};

/// The parsed stream in whole access units, for the appsink named `sink`: preferably with the codec's
/// parameter sets in the caps (`codec_data`, which lets a decoder start at any keyframe), as H.264's
/// parser gives them; H.265 may come as `hev1` (parameter sets in the caps and in the stream), and a
/// stream the parser cannot convert as it comes. `sync=false`: packets are handed out as they come (a
/// live camera paces itself; a file is read as fast as it decodes). The reader is waited for when it is
/// behind: a few seconds of packets at most.
pub const PARSED_PACKETS: &str = "appsink name=sink sync=false max-buffers=60 \
     caps=\"video/x-h264,stream-format=avc,alignment=au;video/x-h265,stream-format=hvc1,alignment=au;\
     video/x-h265,stream-format=hev1,alignment=au;video/x-h264,alignment=au;video/x-h265,alignment=au\"";

/// How often a wait for a packet looks at the pipeline's messages (errors, end of stream).
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the camera sends {0}, not H.264 or H.265")]
    Codec(String),
    #[error("the camera's pictures are {0:?}; only 8-bit 4:2:0 is supported")]
    PixelFormat(Pixel),
    #[error(
        "the stream is {}x{}; H.264 clips need an even width and height",
        .0.width, .0.height
    )]
    OddSize(Size),
    #[error("the decoder: {0}")]
    Libav(#[from] ffmpeg::Error),
    #[error("a decoded picture: {0}")]
    Picture(#[from] opencv::Error),
    #[error("a packet without {0}")]
    Packet(&'static str),
}

/// A decoded picture with its stream timestamp.
pub type TimedPicture = (Option<gst::ClockTime>, I420Image);

/// A libavcodec decoder for the packets of one stream, as `PARSED_PACKETS` gives them. `send` packets
/// in decode order, starting at a keyframe, and take the pictures out with `next_picture`, each with the
/// timestamp its packets carried. A packet whose codec parameters differ from the decoder's (the camera
/// changed them) restarts it.
pub struct Decoder {
    decoder: ffmpeg::decoder::Video,
    /// The codec and its parameter sets the decoder was opened with.
    opened_for: (String, Option<gst::Buffer>),
    /// The caps of the last packet: a packet with these very caps (every packet but one after a change)
    /// is not compared again.
    caps: gst::Caps,
    threads: usize,
    /// Pictures decoded and not taken yet (libav takes no packet while it has one to give).
    ready: VecDeque<TimedPicture>,
}

impl Decoder {
    /// A decoder for the packets of `caps`. `threads` above 1 decodes that many frames at once (frame
    /// threading: each thread holds its own pictures, and each picture comes out that many packets
    /// late).
    pub fn open(caps: &gst::CapsRef, threads: usize) -> Result<Self, DecodeError> {
        static QUIET: Once = Once::new();
        // libav would print its complaints about damaged packets to stderr; ours go to the log.
        QUIET.call_once(|| ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Quiet));
        let opened_for = codec_of(caps);
        let id = match opened_for.0.as_str() {
            "video/x-h264" => ffmpeg::codec::Id::H264,
            "video/x-h265" => ffmpeg::codec::Id::HEVC,
            other => return Err(DecodeError::Codec(other.to_string())),
        };
        let codec = ffmpeg::decoder::find(id).ok_or(ffmpeg::Error::DecoderNotFound)?;
        let mut context = ffmpeg::codec::Context::new_with_codec(codec);
        if let Some(parameters) = &opened_for.1 {
            set_extradata(
                &mut context,
                &parameters
                    .map_readable()
                    .map_err(|_| DecodeError::Packet("readable codec data"))?,
            )?;
        }
        context.set_threading(ffmpeg::threading::Config {
            kind: ffmpeg::threading::Type::Frame,
            count: threads.max(1),
            ..Default::default()
        });
        let decoder = context.decoder().open_as(codec)?.video()?;
        Ok(Self {
            decoder,
            opened_for,
            caps: caps.to_owned(),
            threads,
            ready: VecDeque::new(),
        })
    }

    /// Decodes one packet (its caps, from the camera's parser, tell the codec). A damaged packet is an
    /// error; the decoder goes on with the next.
    pub fn send(&mut self, packet: &gst::Sample) -> Result<(), DecodeError> {
        let caps = packet.caps().ok_or(DecodeError::Packet("caps"))?;
        if caps.as_ptr() != self.caps.as_ptr() {
            if codec_of(caps) != self.opened_for {
                *self = Self::open(caps, self.threads)?;
            }
            self.caps = caps.to_owned();
        }
        let buffer = packet.buffer().ok_or(DecodeError::Packet("a buffer"))?;
        let bytes = buffer
            .map_readable()
            .map_err(|_| DecodeError::Packet("readable bytes"))?;
        let mut av_packet = ffmpeg::Packet::copy(&bytes);
        av_packet.set_pts(buffer.pts().map(|pts| pts.nseconds() as i64));
        av_packet.set_dts(buffer.dts().map(|dts| dts.nseconds() as i64));
        if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
            av_packet.set_flags(ffmpeg::packet::Flags::KEY);
        }
        if let Err(e) = self.decoder.send_packet(&av_packet) {
            if !is_again(&e) {
                return Err(e.into());
            }
            // A damaged picture stopped `take_pictures` before the decoder was empty.
            self.take_pictures()?;
            self.decoder.send_packet(&av_packet)?;
        }
        self.take_pictures()
    }

    /// Ends the stream: the pictures the decoder still holds (B-frames waiting for reordering, frames
    /// in its threads) come out of `next_picture`. It takes no packets after this.
    pub fn send_end(&mut self) -> Result<(), DecodeError> {
        self.decoder.send_eof()?;
        self.take_pictures()
    }

    /// The next decoded picture, in display order, if there is one.
    pub fn next_picture(&mut self) -> Option<TimedPicture> {
        self.ready.pop_front()
    }

    /// Takes every picture the decoder has ready.
    fn take_pictures(&mut self) -> Result<(), DecodeError> {
        loop {
            let mut frame = ffmpeg::frame::Video::empty();
            match self.decoder.receive_frame(&mut frame) {
                Ok(()) => {}
                Err(e) if e == ffmpeg::Error::Eof || is_again(&e) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            let pts = frame
                .pts()
                .and_then(|pts| u64::try_from(pts).ok())
                .map(gst::ClockTime::from_nseconds);
            self.ready.push_back((pts, image_from_frame(frame)?));
        }
    }
}

/// libav's "not now": the decoder wants its pictures taken, or more packets.
fn is_again(error: &ffmpeg::Error) -> bool {
    *error
        == ffmpeg::Error::Other {
            errno: libc::EAGAIN,
        }
}

/// The codec (the caps' name) and its parameter sets (`codec_data`): what a decoder is opened with.
fn codec_of(caps: &gst::CapsRef) -> (String, Option<gst::Buffer>) {
    match caps.structure(0) {
        Some(structure) => (
            structure.name().to_string(),
            structure.get::<gst::Buffer>("codec_data").ok(),
        ),
        None => (String::new(), None),
    }
}

/// Gives the decoder the stream's parameter sets (the avcC/hvcC record of `codec_data`).
fn set_extradata(context: &mut ffmpeg::codec::Context, bytes: &[u8]) -> Result<(), DecodeError> {
    let padded = bytes.len() + ffmpeg::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    // SAFETY: the context is not open yet and has no extradata; av_mallocz gives `padded` zeroed bytes
    // (libav's required padding after the data) that the context owns and frees with av_free when it
    // is freed.
    unsafe {
        let extradata = ffmpeg::ffi::av_mallocz(padded).cast::<u8>();
        if extradata.is_null() {
            return Err(ffmpeg::Error::Other {
                errno: libc::ENOMEM,
            }
            .into());
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), extradata, bytes.len());
        let context = context.as_mut_ptr();
        (*context).extradata = extradata;
        (*context).extradata_size = bytes.len() as i32;
    }
    Ok(())
}

/// A decoded frame as an `I420Image` read in place, marked with the stream's colorimetry.
fn image_from_frame(frame: ffmpeg::frame::Video) -> Result<I420Image, DecodeError> {
    let size = Size::new(frame.width() as i32, frame.height() as i32);
    if size.width % 2 != 0 || size.height % 2 != 0 {
        return Err(DecodeError::OddSize(size));
    }
    let full_range = match frame.format() {
        Pixel::YUV420P => frame.color_range() == ffmpeg::color::Range::JPEG,
        Pixel::YUVJ420P => true,
        other => return Err(DecodeError::PixelFormat(other)),
    };
    let colorimetry = Colorimetry {
        matrix: match frame.color_space() {
            ffmpeg::color::Space::BT709 => ColourMatrix::Bt709,
            _ => ColourMatrix::Bt601,
        },
        full_range,
    };
    let mut image = I420Image::from_decoded(frame)?;
    image.set_colorimetry(colorimetry);
    Ok(image)
}

/// The stream timestamp of a sample's buffer.
pub fn pts_of(sample: &gst::Sample) -> Option<gst::ClockTime> {
    sample.buffer().and_then(|buffer| buffer.pts())
}

/// What a wait for a packet brought.
pub enum Pulled {
    Packet(gst::Sample),
    /// The stream ended (end of file, or the source stopped).
    Ended,
    /// Nothing within the wait.
    Nothing,
}

/// Waits up to `wait` for the next sample at `sink`, watching the pipeline for errors (GStreamer's
/// message) and the end meanwhile.
pub fn pull(sink: &AppSink, pipeline: &gst::Pipeline, wait: Duration) -> Result<Pulled, String> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let poll = gst::ClockTime::from_nseconds(left.min(POLL).as_nanos() as u64);
        if let Some(sample) = sink.try_pull_sample(poll) {
            return Ok(Pulled::Packet(sample));
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

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer::prelude::*;
    use opencv::core::Scalar;
    use opencv::prelude::*;

    /// The packets of a 64x48 H.264 stream of `count` moving frames, as the camera reader takes them.
    fn packets(count: usize) -> Vec<gst::Sample> {
        let pipeline = gst_pipeline::launch(&format!(
            "videotestsrc num-buffers={count} pattern=ball ! video/x-raw,width=64,height=48,format=I420 \
             ! x264enc key-int-max=30 ! h264parse ! {PARSED_PACKETS}"
        ))
        .unwrap();
        let sink: AppSink = gst_pipeline::element_as(&pipeline, "sink").unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut packets = Vec::new();
        while let Pulled::Packet(sample) = pull(&sink, &pipeline, Duration::from_secs(10)).unwrap()
        {
            packets.push(sample);
        }
        pipeline.set_state(gst::State::Null).unwrap();
        packets
    }

    /// Decodes `packets` and hands each picture to `take`; the packed bytes of every picture after it.
    fn decode(packets: &[gst::Sample], mut take: impl FnMut(&mut I420Image)) -> Vec<Vec<u8>> {
        let mut decoder = Decoder::open(packets[0].caps().unwrap(), 2).unwrap();
        let mut pictures = Vec::new();
        let mut handle = |decoder: &mut Decoder| {
            while let Some((_, mut image)) = decoder.next_picture() {
                assert!(image.is_in_decoder_frame(), "the picture was copied");
                take(&mut image);
                let buffer = image.into_buffer().unwrap();
                pictures.push(buffer.map_readable().unwrap().as_slice().to_vec());
            }
        };
        for packet in packets {
            decoder.send(packet).unwrap();
            handle(&mut decoder);
        }
        decoder.send_end().unwrap();
        handle(&mut decoder);
        pictures
    }

    #[test]
    fn every_packet_decodes_to_a_picture_read_in_place() {
        let packets = packets(12);
        assert_eq!(packets.len(), 12);
        let pictures = decode(&packets, |image| {
            assert_eq!(image.size(), Size::new(64, 48));
        });
        assert_eq!(pictures.len(), 12);
        assert!(pictures.iter().all(|p| p.len() == 64 * 48 * 3 / 2));
        assert_ne!(
            pictures[0][..64 * 48],
            pictures[11][..64 * 48],
            "the ball moves"
        );
    }

    /// Boxes are drawn into a copy: the decoder's picture, which the pictures after it are predicted
    /// from, stays as it was.
    #[test]
    fn drawing_into_a_picture_leaves_the_pictures_decoded_after_it_unchanged() {
        let packets = packets(12);
        let untouched = decode(&packets, |_| {});
        let mut index = 0;
        let drawn = decode(&packets, |image| {
            if index % 2 == 0 {
                let mut planes = image.planes_mut().unwrap();
                planes.y.set_to_def(&Scalar::all(200.0)).unwrap();
                drop(planes);
                assert!(!image.is_in_decoder_frame());
            }
            index += 1;
        });
        assert_eq!(drawn.len(), untouched.len());
        for (index, (drawn, untouched)) in drawn.iter().zip(&untouched).enumerate() {
            if index % 2 == 0 {
                assert!(drawn[..64 * 48].iter().all(|&y| y == 200));
                assert_eq!(drawn[64 * 48..], untouched[64 * 48..]);
            } else {
                assert_eq!(drawn, untouched, "picture {index} changed");
            }
        }
    }

    /// A frame whose rows are longer than the picture (libav aligns them) is read and packed row by row.
    #[test]
    fn padded_rows_are_read_in_place_and_packed_when_copied() {
        let (w, h) = (40_usize, 24_usize);
        let mut frame = ffmpeg::frame::Video::new(Pixel::YUV420P, w as u32, h as u32);
        let stride = frame.stride(0);
        assert!(stride > w, "the frame's rows are padded");
        for row in 0..h {
            frame.data_mut(0)[row * stride..row * stride + w].fill(row as u8);
        }
        for (plane, base) in [(1, 100), (2, 150)] {
            let stride = frame.stride(plane);
            for row in 0..h / 2 {
                frame.data_mut(plane)[row * stride..row * stride + w / 2].fill(base + row as u8);
            }
        }
        let mut image = I420Image::from_decoded(frame).unwrap();
        assert!(image.is_in_decoder_frame());
        assert_eq!(*image.luma().unwrap().at_2d::<u8>(23, 39).unwrap(), 23);
        let planes = image.planes_mut().unwrap();
        assert_eq!(*planes.u.at_2d::<u8>(11, 19).unwrap(), 111);
        assert_eq!(*planes.v.at_2d::<u8>(5, 0).unwrap(), 155);
        drop(planes);
        let packed = image.into_buffer().unwrap();
        let packed = packed.map_readable().unwrap();
        assert_eq!(packed.len(), w * h * 3 / 2);
        assert_eq!(packed[w * h - 1], 23);
        assert_eq!(packed[w * h + w / 2 * h / 2 - 1], 111);
    }

    /// A packet the network damaged is an error, and the decoder goes on with the next ones.
    #[test]
    fn a_damaged_packet_is_refused_and_the_packets_after_it_still_decode() {
        let mut packets = packets(12);
        let mut damaged = gst::Buffer::from_slice(vec![0xff_u8; 64]);
        let original = packets[5].buffer().unwrap();
        damaged.get_mut().unwrap().set_pts(original.pts());
        damaged
            .get_mut()
            .unwrap()
            .set_flags(gst::BufferFlags::DELTA_UNIT);
        packets[5] = gst::Sample::builder()
            .buffer(&damaged)
            .caps(&packets[5].caps_owned().unwrap())
            .build();
        let mut decoder = Decoder::open(packets[0].caps().unwrap(), 2).unwrap();
        let mut refused = Vec::new();
        let mut pictures = 0;
        for (index, packet) in packets.iter().enumerate() {
            if decoder.send(packet).is_err() {
                refused.push(index);
            }
            pictures += std::iter::from_fn(|| decoder.next_picture()).count();
        }
        decoder.send_end().unwrap();
        pictures += std::iter::from_fn(|| decoder.next_picture()).count();
        // With two threads the decoder tells of it one packet late.
        assert_eq!(refused, [6]);
        assert_eq!(pictures, 11, "every picture but the damaged one");
    }

    #[test]
    fn a_stream_that_is_not_h264_or_h265_is_refused_by_name() {
        gst::init().unwrap();
        let caps = gst::Caps::builder("video/x-vp8").build();
        let error = Decoder::open(&caps, 1).err().unwrap();
        assert_eq!(
            error.to_string(),
            "the camera sends video/x-vp8, not H.264 or H.265"
        );
    }
}
