//! Real fixtures for the end-to-end tests: the RTSP test camera (GStreamer, `rtsp_camera.py`), Azurite,
//! the `dachavideo` binary as a child process, test videos made with ffmpeg, and decoding clips with
//! OpenCV. Every process is killed on drop; every wait is bounded.

#![allow(dead_code)] // Each test binary uses a different part of this module.

// The unit tests' video maker, shared: `lavfi_video` (re-exported unused by most test binaries).
#[path = "../../src/test_videos.rs"]
mod test_videos;
#[allow(unused_imports)]
pub use test_videos::lavfi_video;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use opencv::core::{Mat, Scalar};
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};

pub const CAMERA_USER: &str = "watcher";
pub const CAMERA_PASSWORD: &str = "dacha-pass-7Q2";
/// Azurite's well-known development account key (public, but the service must still never log it).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
pub const CONTAINER: &str = "dacha-clips";

fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Polls `condition` every 100 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ports handed out in this process, so two fixtures never race for the same free port.
static TAKEN_PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        let mut taken = TAKEN_PORTS.lock().unwrap();
        if !taken.contains(&port) {
            taken.push(port);
            return port;
        }
    }
}

fn signal(child: &Child, signal: Signal) {
    let _ = kill(Pid::from_raw(child.id() as i32), signal);
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The RTSP test camera: a static scene with a box that moves while motion is on. Requires a password.
pub struct Camera {
    port: u16,
    child: Option<Child>,
    motion: bool,
}

impl Camera {
    pub fn start(motion: bool) -> Self {
        let mut camera = Self {
            port: free_port(),
            child: None,
            motion,
        };
        camera.restart();
        camera
    }

    /// (Re)starts the server on the same port; returns once it serves.
    pub fn restart(&mut self) {
        self.kill();
        let mut child = Command::new("/usr/bin/python3")
            .arg(project_root().join("tests/support/rtsp_camera.py"))
            .args(["--port", &self.port.to_string()])
            .args(["--user", CAMERA_USER, "--password", CAMERA_PASSWORD])
            .args(["--motion", if self.motion { "on" } else { "off" }])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/support/rtsp_camera.py with /usr/bin/python3");
        let stdout = child.stdout.take().expect("camera stdout");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("READY") {
                    let _ = ready_tx.send(());
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(15))
            .expect("the RTSP test camera did not report READY within 15 s");
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!(
            "rtsp://{CAMERA_USER}:{CAMERA_PASSWORD}@127.0.0.1:{}/stream",
            self.port
        )
    }

    pub fn set_motion(&mut self, on: bool) {
        self.motion = on;
        if let Some(child) = &self.child {
            signal(child, if on { Signal::SIGUSR1 } else { Signal::SIGUSR2 });
        }
    }

    /// Kills the server (the camera "goes away").
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// Stops the server process without closing its sockets (a frozen camera).
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            signal(child, Signal::SIGSTOP);
        }
    }

    pub fn thaw(&self) {
        if let Some(child) = &self.child {
            signal(child, Signal::SIGCONT);
        }
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.thaw();
        self.kill();
    }
}

/// Azurite's blob service on a free port, with its data in a temporary folder (kept across restarts).
pub struct Azurite {
    port: u16,
    data: tempfile::TempDir,
    child: Option<Child>,
}

impl Azurite {
    pub fn start() -> Self {
        let mut azurite = Self {
            port: free_port(),
            data: tempfile::tempdir().expect("azurite data dir"),
            child: None,
        };
        azurite.restart();
        azurite
    }

    pub fn restart(&mut self) {
        self.stop();
        let binary = project_root().join(".tools/node_modules/.bin/azurite-blob");
        assert!(
            binary.exists(),
            "Azurite is not installed: run scripts/setup.sh"
        );
        let child = Command::new(binary)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &self.port.to_string(),
            ])
            .arg("--location")
            .arg(self.data.path())
            .args(["--skipApiVersionCheck", "--loose", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start azurite-blob");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(30), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "Azurite did not listen on {port} within 30 s"
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    pub fn connection_string(&self) -> String {
        self.connection_string_with_key(AZURITE_KEY)
    }

    /// A blob's URL (no query).
    pub fn blob_url(&self, container: &str, blob: &str) -> String {
        format!(
            "http://127.0.0.1:{}/devstoreaccount1/{container}/{blob}",
            self.port
        )
    }

    pub fn connection_string_with_key(&self, key: &str) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};\
             BlobEndpoint=http://127.0.0.1:{}/devstoreaccount1;",
            self.port
        )
    }

    /// A blob's Content-MD5 (base64) and metadata.
    pub fn properties(
        &self,
        container: &str,
        blob: &str,
    ) -> (Option<String>, HashMap<String, String>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let client = self.container_client(container).blob_client(blob);
            let properties = client.get_properties().await.expect("blob properties");
            let md5 = properties
                .blob
                .properties
                .content_md5
                .map(|m| azure_core::base64::encode(m.as_slice()));
            let metadata = properties
                .blob
                .metadata
                .unwrap_or_default()
                .into_iter()
                .collect();
            (md5, metadata)
        })
    }

    fn container_client(&self, container: &str) -> azure_storage_blobs::prelude::ContainerClient {
        let credentials = azure_storage::StorageCredentials::access_key(
            "devstoreaccount1",
            azure_core::auth::Secret::new(AZURITE_KEY.to_string()),
        );
        let location = azure_storage::CloudLocation::Custom {
            account: "devstoreaccount1".into(),
            uri: format!("http://127.0.0.1:{}/devstoreaccount1", self.port),
        };
        azure_storage_blobs::prelude::ClientBuilder::with_location(location, credentials)
            .container_client(container)
    }

    pub fn create_container(&self, container: &str) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(self.container_client(container).create().into_future())
            .expect("create a container");
    }

    /// A container SAS URL for `container` (path-style, as for Azurite) granting `permissions` (letters of
    /// r, a, c, w, d, l) until `expiry`, signed with the development key.
    pub fn container_sas_url(
        &self,
        container: &str,
        permissions: &str,
        expiry: time::OffsetDateTime,
    ) -> String {
        use azure_storage::shared_access_signature::SasToken;
        use azure_storage::shared_access_signature::service_sas::BlobSasPermissions;
        let permissions = BlobSasPermissions {
            read: permissions.contains('r'),
            add: permissions.contains('a'),
            create: permissions.contains('c'),
            write: permissions.contains('w'),
            delete: permissions.contains('d'),
            list: permissions.contains('l'),
            ..Default::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sas = runtime
            .block_on(
                self.container_client(container)
                    .shared_access_signature(permissions, expiry),
            )
            .expect("make a SAS");
        format!(
            "http://127.0.0.1:{}/devstoreaccount1/{container}?{}",
            self.port,
            sas.token().expect("sign the SAS")
        )
    }

    /// With nothing but `sas_url`: the HTTP status of listing its container and of reading `blob`.
    pub fn statuses_with_sas(&self, sas_url: &str, blob: &str) -> (Option<u16>, Option<u16>) {
        use futures::StreamExt;
        let url = url::Url::parse(sas_url).unwrap();
        let container = url.path_segments().unwrap().nth(1).unwrap().to_string();
        let credentials =
            azure_storage::StorageCredentials::sas_token(url.query().unwrap()).unwrap();
        let location = azure_storage::CloudLocation::Custom {
            account: "devstoreaccount1".into(),
            uri: format!("http://127.0.0.1:{}/devstoreaccount1", self.port),
        };
        let client =
            azure_storage_blobs::prelude::ClientBuilder::with_location(location, credentials)
                .retry(azure_core::RetryOptions::none())
                .container_client(container);
        let status = |result: Result<(), azure_core::Error>| match result {
            Ok(()) => Some(200),
            Err(e) => match e.kind() {
                azure_core::error::ErrorKind::HttpResponse { status, .. } => Some(*status as u16),
                _ => None,
            },
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listed = match client.list_blobs().into_stream().next().await {
                Some(Ok(_)) => Ok(()),
                Some(Err(e)) => Err(e),
                None => Ok(()),
            };
            let read = client.blob_client(blob).get_content().await.map(|_| ());
            (status(listed), status(read))
        })
    }

    /// The clips (`.mp4` blobs) in `container` with their bytes (empty when the container does not exist).
    pub fn blobs(&self, container: &str) -> Vec<(String, Vec<u8>)> {
        let mut clips = self.all_blobs(container);
        clips.retain(|(name, _)| name.ends_with(".mp4"));
        clips
    }

    /// Every blob in `container` (clips, snapshots, event records) with its bytes.
    pub fn all_blobs(&self, container: &str) -> Vec<(String, Vec<u8>)> {
        use futures::StreamExt;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let container = self.container_client(container);
            let mut names = Vec::new();
            let mut pages = container.list_blobs().into_stream();
            while let Some(page) = pages.next().await {
                match page {
                    Ok(page) => names.extend(page.blobs.blobs().map(|b| b.name.clone())),
                    Err(_) => return Vec::new(), // no container yet
                }
            }
            let mut blobs = Vec::new();
            for name in names {
                let bytes = container
                    .blob_client(&name)
                    .get_content()
                    .await
                    .expect("download a blob");
                blobs.push((name, bytes));
            }
            blobs
        })
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The service binary as a child process, its stdout and stderr collected in one log file.
pub struct Service {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    log: PathBuf,
    args: Vec<String>,
    env: HashMap<String, String>,
    pub exit: Option<ExitStatus>,
}

impl Service {
    /// Starts `dachavideo [args]` in a fresh working directory with exactly `env` (plus PATH).
    pub fn start(args: &[&str], env: &HashMap<String, String>) -> Self {
        let dir = tempfile::tempdir().expect("service dir");
        let mut service = Self {
            child: None,
            log: dir.path().join("service.log"),
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env.clone(),
            exit: None,
        };
        service.start_again();
        service
    }

    /// Starts the service again in the same directory (same spool), appending to the same log.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the service is still running");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_dachavideo"))
            .args(&self.args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(&self.env)
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("start dachavideo");
        self.child = Some(child);
        self.exit = None;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Kills the process with SIGKILL (a crash or power cut) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            fs::read_to_string(format!("/proc/{}/status", self.pid().expect("running"))).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Open file descriptors, from /proc.
    pub fn open_fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid().expect("running")))
            .unwrap()
            .count()
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of the log containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until `needle` appears at least `times` times in the log; panics with the log if it does not.
    pub fn wait_for(&self, needle: &str, times: usize, timeout: Duration) -> Duration {
        let started = Instant::now();
        if !wait_until(timeout, || self.count(needle) >= times) {
            panic!(
                "{needle:?} did not appear {times}x within {timeout:?}; log:\n{}",
                self.log()
            );
        }
        started.elapsed()
    }

    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            signal(child, Signal::SIGTERM);
        }
    }

    /// SIGTERM, then asserts the service exits 0 within 20 s.
    pub fn stop_cleanly(&mut self) {
        self.terminate();
        let code = self.wait_exit(Duration::from_secs(20)).map(|s| s.code());
        assert_eq!(
            code,
            Some(Some(0)),
            "no clean exit after SIGTERM:\n{}",
            self.log()
        );
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let mut status = None;
        wait_until(timeout, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_some() {
            self.child = None;
            self.exit = status;
        }
        status
    }

    /// Clips waiting in the spool.
    pub fn spooled_clips(&self) -> Vec<PathBuf> {
        walkdir::WalkDir::new(self.spool())
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "mp4"))
            .map(|e| e.into_path())
            .collect()
    }

    /// Asserts that no secret reached the output.
    pub fn assert_no_secrets(&self) {
        let log = self.log();
        assert!(
            !log.contains(CAMERA_PASSWORD),
            "the camera password leaked:\n{log}"
        );
        assert!(!log.contains(AZURITE_KEY), "the account key leaked:\n{log}");
        assert!(
            !log.contains(&AZURITE_KEY[..20]),
            "part of the account key leaked:\n{log}"
        );
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }
}

/// The environment for a service against `camera`, writing to Azurite if given.
pub fn service_env(
    camera: &Camera,
    azurite: Option<&Azurite>,
    extra: &[(&str, &str)],
) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = [
        ("RTSP_URL", camera.url()),
        ("CAMERA_NAME", "testcam".to_string()),
        ("RECONNECT_INTERVAL", "2s".to_string()),
        ("CAMERA_READ_TIMEOUT", "3s".to_string()),
        ("RUST_LOG", "info".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(azurite) = azurite {
        env.insert("AZ_STORAGE_CONNSTRING".into(), azurite.connection_string());
        env.insert("AZ_CONTAINER_NAME".into(), CONTAINER.into());
    }
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

/// What a clip holds, decoded with OpenCV.
#[derive(Debug)]
pub struct DecodedClip {
    pub frames: u32,
    pub width: i32,
    pub height: i32,
    /// Frames with at least a box's worth of pure box-green pixels.
    pub frames_with_boxes: u32,
    /// Frames before the first one with boxes (the pre-roll).
    pub leading_frames_without_boxes: u32,
}

pub fn decode(bytes: &[u8]) -> DecodedClip {
    let file = tempfile::Builder::new().suffix(".mp4").tempfile().unwrap();
    fs::write(file.path(), bytes).unwrap();
    decode_file(file.path())
}

pub fn decode_file(path: &Path) -> DecodedClip {
    let mut capture = VideoCapture::from_file(path, videoio::CAP_FFMPEG).expect("open the clip");
    assert!(
        capture.is_opened().unwrap(),
        "OpenCV cannot open {}",
        path.display()
    );
    let mut clip = DecodedClip {
        frames: 0,
        width: 0,
        height: 0,
        frames_with_boxes: 0,
        leading_frames_without_boxes: 0,
    };
    let mut image = Mat::default();
    while capture.read(&mut image).unwrap_or(false) && !image.empty() {
        clip.frames += 1;
        clip.width = image.cols();
        clip.height = image.rows();
        if green_pixels(&image) >= 100 {
            clip.frames_with_boxes += 1;
        } else if clip.frames_with_boxes == 0 {
            clip.leading_frames_without_boxes += 1;
        }
    }
    clip
}

/// Pixels close to the box colour (BGR 0,255,0) after H.264 compression.
fn green_pixels(image: &Mat) -> i32 {
    let mut mask = Mat::default();
    let lower = Scalar::new(0.0, 180.0, 0.0, 0.0);
    let upper = Scalar::new(90.0, 255.0, 90.0, 0.0);
    opencv::core::in_range(image, &lower, &upper, &mut mask).unwrap();
    opencv::core::count_non_zero(&mask).unwrap()
}

/// A 12 s, 640x360, 15 fps H.264 video: a still textured scene; a 100x100 white box enters from the left
/// at 4 s, crosses, and has left the frame by 8 s.
pub fn motion_video(dir: &Path) -> PathBuf {
    let path = dir.join("motion_4_8.mp4");
    let filter = "[0:v]colorchannelmixer=rr=0.5:gg=0.5:bb=0.5[bg];\
                  [bg][1:v]overlay=x='if(lt(t,4),-200,if(lt(t,8),-100+(t-4)*210,800))':y=130:shortest=1,\
                  format=yuv420p[v]";
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "smptebars=size=640x360:rate=15",
        ])
        .args(["-f", "lavfi", "-i", "color=c=white:size=100x100:rate=15"])
        .args([
            "-filter_complex",
            filter,
            "-map",
            "[v]",
            "-t",
            "12",
            "-r",
            "15",
        ])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-g", "15", "-bf", "0", "-pix_fmt", "yuv420p",
        ])
        .arg(&path)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg failed to make the test video");
    path
}

/// MD5 of `bytes`, base64, as in a Content-MD5 header.
/// What a snapshot JPEG shows.
#[derive(Debug)]
pub struct SnapshotFacts {
    pub width: i32,
    pub height: i32,
    /// Pixels of (near) box green.
    pub green_pixels: usize,
}

pub fn snapshot_facts(jpeg: &[u8]) -> SnapshotFacts {
    use opencv::core::{Vec3b, Vector};
    let image = opencv::imgcodecs::imdecode(
        &Vector::<u8>::from_slice(jpeg),
        opencv::imgcodecs::IMREAD_COLOR,
    )
    .expect("decode the snapshot");
    assert!(!image.empty(), "the snapshot is not a JPEG");
    let mut green_pixels = 0;
    for row in 0..image.rows() {
        for col in 0..image.cols() {
            let [b, g, r] = image.at_2d::<Vec3b>(row, col).unwrap().0;
            if g > 200 && b < 80 && r < 80 {
                green_pixels += 1;
            }
        }
    }
    SnapshotFacts {
        width: image.cols(),
        height: image.rows(),
        green_pixels,
    }
}

pub fn md5_base64(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    azure_core::base64::encode(Md5::digest(bytes))
}

/// `GET path` from `addr` (host:port) with a 5 s timeout: the status code and the body. `None` when
/// nothing answers.
/// Runs `dachavideo health` in `dir` with `env`: its exit code and its one line.
pub fn dachavideo_health(dir: &Path, env: &HashMap<String, String>) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_dachavideo"))
        .arg("health")
        .current_dir(dir)
        .env_clear()
        .envs(env)
        .output()
        .expect("run dachavideo health");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
    )
}

pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// A sample's value in a Prometheus text exposition (`name` includes any `{labels}`); panics when absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

/// One HTTP request as a [`HookReceiver`] got it.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// `POST /path?query HTTP/1.1`
    pub line: String,
    /// Header names in lowercase.
    pub headers: HashMap<String, String>,
    pub body: String,
    /// The status it was answered with.
    pub answered: u16,
}

/// A webhook receiver on 127.0.0.1: answers the first `failures` requests with 500, then 200, and keeps
/// every request.
pub struct HookReceiver {
    pub port: u16,
    requests: std::sync::Arc<Mutex<Vec<ReceivedRequest>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HookReceiver {
    pub fn start(failures: usize) -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the hook receiver");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (kept, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut data = Vec::new();
                let mut buffer = [0_u8; 4096];
                // Headers, then as much body as Content-Length says.
                let request = loop {
                    let Ok(n) = stream.read(&mut buffer) else {
                        break None;
                    };
                    if n == 0 {
                        break None;
                    }
                    data.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let mut lines = head.lines();
                    let line = lines.next().unwrap_or_default().to_string();
                    let headers: HashMap<String, String> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let length: usize = headers
                        .get("content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break Some((line, headers, body.to_string()));
                    }
                };
                let Some((line, headers, body)) = request else {
                    continue;
                };
                let mut kept = kept.lock().unwrap();
                let answered = if kept.len() < failures { 500 } else { 200 };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {answered} {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    if answered == 200 {
                        "OK"
                    } else {
                        "Internal Server Error"
                    }
                );
                kept.push(ReceivedRequest {
                    line,
                    headers,
                    body,
                    answered,
                });
            }
        });
        Self {
            port,
            requests,
            stop,
        }
    }

    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HookReceiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
