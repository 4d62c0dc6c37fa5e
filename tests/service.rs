//! End-to-end: the service against the real RTSP test camera and Azurite.

mod support;

use std::time::{Duration, Instant};

use support::*;

const FPS: f64 = 15.0;

/// Waits for the clip the service is recording to be uploaded, with motion stopped after it started so
/// that exactly one clip is made.
fn one_motion_clip(camera: &mut Camera, service: &Service, record_secs: u64) {
    service.wait_for("motion: recording", 1, Duration::from_secs(30));
    camera.set_motion(false);
    service.wait_for("clip uploaded", 1, Duration::from_secs(record_secs + 20));
}

#[test]
fn a_moving_object_becomes_one_annotated_blob_and_the_local_file_is_deleted() {
    let azurite = Azurite::start();
    let mut camera = Camera::start(true);
    let record = 5;
    let env = service_env(
        &camera,
        Some(&azurite),
        &[("RECORD_DURATION", "5s"), ("PRE_ROLL", "0s")],
    );
    let mut service = Service::start(&[], &env);
    one_motion_clip(&mut camera, &service, record);

    let blobs = azurite.blobs(CONTAINER);
    assert_eq!(
        blobs.len(),
        1,
        "{:?}",
        blobs.iter().map(|b| &b.0).collect::<Vec<_>>()
    );
    let (name, bytes) = &blobs[0];
    assert!(
        name.starts_with("testcam/") && name.ends_with("Z.mp4"),
        "{name}"
    );
    let clip = decode(bytes);
    let expected = record as f64 * FPS;
    assert!(
        (f64::from(clip.frames) - expected).abs() <= expected * 0.1,
        "{clip:?}: expected about {expected} frames"
    );
    assert_eq!((clip.width, clip.height), (640, 360));
    assert!(
        clip.frames_with_boxes * 2 >= clip.frames,
        "boxes on fewer than half the frames: {clip:?}"
    );
    let (content_md5, metadata) = azurite.properties(CONTAINER, name);
    assert_eq!(
        content_md5,
        Some(md5_base64(bytes)),
        "Content-MD5 must match the bytes"
    );
    assert_eq!(
        metadata.get("camera").map(String::as_str),
        Some("testcam"),
        "{metadata:?}"
    );
    assert_eq!(
        metadata.get("frames"),
        Some(&clip.frames.to_string()),
        "{metadata:?}"
    );
    assert!(
        service.spooled_clips().is_empty(),
        "local copy kept after upload: {:?}",
        service.spooled_clips()
    );

    // Beside the clip: a snapshot with the boxes, and the event record.
    let stem = name.trim_end_matches(".mp4");
    let all: std::collections::HashMap<_, _> = azurite.all_blobs(CONTAINER).into_iter().collect();
    assert_eq!(all.len(), 3, "{:?}", all.keys());
    let snapshot = snapshot_facts(&all[&format!("{stem}.jpg")]);
    assert_eq!((snapshot.width, snapshot.height), (640, 360));
    assert!(snapshot.green_pixels > 100, "no box on the snapshot");
    let record: serde_json::Value = serde_json::from_slice(&all[&format!("{stem}.json")]).unwrap();
    assert_eq!(record["clip"], name.as_str());
    assert_eq!(record["camera"], "testcam");
    assert_eq!(record["frames"], u64::from(clip.frames));
    assert_eq!(record["snapshot"], format!("{stem}.jpg"));
    let samples = record["motion"].as_array().unwrap();
    assert!(
        samples.len() as u32 >= clip.frames_with_boxes / 2,
        "{record}"
    );
    assert_eq!(
        azurite.properties(CONTAINER, &format!("{stem}.jpg")).0,
        Some(md5_base64(&all[&format!("{stem}.jpg")]))
    );

    service.stop_cleanly();
    service.assert_no_secrets();
}

#[test]
fn a_still_scene_records_nothing() {
    let azurite = Azurite::start();
    let camera = Camera::start(false);
    let env = service_env(&camera, Some(&azurite), &[("RECORD_DURATION", "4s")]);
    let mut service = Service::start(&[], &env);
    service.wait_for("camera connected", 1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(8));
    service.stop_cleanly();
    assert_eq!(service.count("motion: recording"), 0, "{}", service.log());
    assert!(azurite.all_blobs(CONTAINER).is_empty());
    assert!(service.spooled_clips().is_empty());
}

#[test]
fn a_camera_killed_mid_clip_keeps_the_partial_clip_and_the_service_reconnects() {
    let azurite = Azurite::start();
    let mut camera = Camera::start(true);
    let env = service_env(&camera, Some(&azurite), &[("RECORD_DURATION", "20s")]);
    let mut service = Service::start(&[], &env);
    service.wait_for("motion: recording", 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    camera.kill();
    service.wait_for("clip uploaded", 1, Duration::from_secs(15));
    let blobs = azurite.blobs(CONTAINER);
    assert_eq!(blobs.len(), 1);
    let partial = decode(&blobs[0].1);
    assert!(
        partial.frames >= 15 && partial.frames < 150,
        "partial clip: {partial:?}"
    );

    camera.restart();
    let restarted = Instant::now();
    service.wait_for("camera connected", 2, Duration::from_secs(20));
    let reconnect = restarted.elapsed();
    // RECONNECT_INTERVAL is 2 s; opening the stream takes about 1.5 s.
    assert!(
        reconnect < Duration::from_secs(2 + 5),
        "reconnected after {reconnect:?}"
    );
    service.wait_for("motion: recording", 2, Duration::from_secs(15));
    service.stop_cleanly();
    assert_eq!(azurite.blobs(CONTAINER).len(), 2, "{}", service.log());
    service.assert_no_secrets();
}

#[test]
fn a_frozen_camera_is_noticed_within_the_read_timeout() {
    let mut camera = Camera::start(false);
    let env = service_env(
        &camera,
        None,
        &[("CAMERA_READ_TIMEOUT", "3s"), ("RECONNECT_INTERVAL", "1s")],
    );
    let mut service = Service::start(&[], &env);
    service.wait_for("camera connected", 1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    camera.freeze();
    let noticed = service.wait_for("camera stream lost", 1, Duration::from_secs(15));
    camera.thaw();
    assert!(
        noticed <= Duration::from_secs(3 + 2),
        "a 3 s read timeout took {noticed:?}"
    );
    service.wait_for("camera connected", 2, Duration::from_secs(20));
    camera.kill();
    service.stop_cleanly();
}

#[test]
fn with_storage_down_the_clip_waits_on_disk_and_goes_up_when_it_returns() {
    let mut azurite = Azurite::start();
    let mut camera = Camera::start(true);
    let env = service_env(&camera, Some(&azurite), &[("RECORD_DURATION", "5s")]);
    let mut service = Service::start(&[], &env);
    service.wait_for("motion: recording", 1, Duration::from_secs(30));
    azurite.stop();
    camera.set_motion(false);
    service.wait_for("upload failed", 1, Duration::from_secs(20));
    assert_eq!(
        service.spooled_clips().len(),
        1,
        "the clip must wait in the spool"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(service.spooled_clips().len(), 1);

    azurite.restart();
    service.wait_for("clip uploaded", 1, Duration::from_secs(60));
    let blobs = azurite.blobs(CONTAINER);
    assert_eq!(blobs.len(), 1);
    assert!(decode(&blobs[0].1).frames >= 40);
    assert!(service.spooled_clips().is_empty());
    service.stop_cleanly();
    service.assert_no_secrets();
}

#[test]
fn sigterm_during_a_clip_exits_zero_within_the_grace_and_keeps_the_clip() {
    let azurite = Azurite::start();
    let camera = Camera::start(true);
    let env = service_env(
        &camera,
        Some(&azurite),
        &[("RECORD_DURATION", "30s"), ("SHUTDOWN_GRACE", "8s")],
    );
    let mut service = Service::start(&[], &env);
    service.wait_for("motion: recording", 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let signalled = Instant::now();
    service.terminate();
    let status = service.wait_exit(Duration::from_secs(8));
    let took = signalled.elapsed();
    assert_eq!(
        status.map(|s| s.code()),
        Some(Some(0)),
        "after {took:?}:\n{}",
        service.log()
    );
    let blobs = azurite.blobs(CONTAINER);
    let on_disk = service.spooled_clips();
    assert_eq!(
        blobs.len() + on_disk.len(),
        1,
        "the clip must be in storage or on disk"
    );
    if let Some((_, bytes)) = blobs.first() {
        let clip = decode(bytes);
        assert!(clip.frames >= 30, "{clip:?}");
    }
    service.assert_no_secrets();
}

#[test]
fn a_wrong_account_key_keeps_clips_on_disk_and_says_why() {
    let azurite = Azurite::start();
    let mut camera = Camera::start(true);
    let wrong_key = AZURITE_KEY.replace("Eby8", "Xby8");
    let mut env = service_env(&camera, Some(&azurite), &[("RECORD_DURATION", "5s")]);
    env.insert(
        "AZ_STORAGE_CONNSTRING".into(),
        azurite.connection_string_with_key(&wrong_key),
    );
    let mut service = Service::start(&[], &env);
    service.wait_for("motion: recording", 1, Duration::from_secs(30));
    camera.set_motion(false);
    service.wait_for("upload failed", 1, Duration::from_secs(20));
    let log = service.log();
    assert!(log.contains("refused the credentials (403"), "{log}");
    assert_eq!(service.spooled_clips().len(), 1);
    service.terminate();
    assert_eq!(
        service.wait_exit(Duration::from_secs(30)).map(|s| s.code()),
        Some(Some(0))
    );
    assert_eq!(
        service.spooled_clips().len(),
        1,
        "the clip must survive the shutdown"
    );
    assert!(!service.log().contains(&wrong_key[..20]));
    service.assert_no_secrets();
}

#[test]
fn health_is_good_while_frames_arrive_and_bad_when_the_camera_or_the_service_is_gone() {
    let mut camera = Camera::start(false);
    let env = service_env(&camera, None, &[("HEALTH_MAX_FRAME_AGE", "4s")]);
    let health = |service: &Service| dachavideo_health(service.dir.path(), &env);
    let mut service = Service::start(&[], &env);
    service.wait_for("camera connected", 1, Duration::from_secs(20));
    assert!(
        wait_until(Duration::from_secs(10), || health(&service).0 == Some(0)),
        "never healthy: {:?}",
        health(&service)
    );
    camera.kill();
    assert!(
        wait_until(Duration::from_secs(15), || health(&service).0 == Some(1)),
        "still healthy without a camera: {:?}",
        health(&service)
    );
    assert!(
        health(&service).1.contains("no frame from the camera"),
        "{:?}",
        health(&service)
    );
    service.stop_cleanly();
    let (code, text) = health(&service);
    assert_eq!(code, Some(1));
    assert!(text.contains("not running"), "{text}");
}

#[test]
fn motion_inside_motion_mask_records_nothing_and_the_same_motion_unmasked_records_a_clip() {
    // The test camera's box (a quarter of the height, vertically centred) glides along the band
    // y 0.375-0.625 of the frame; this mask covers that band from edge to edge.
    let camera = Camera::start(true);
    let masked = service_env(
        &camera,
        None,
        &[
            ("RECORD_DURATION", "4s"),
            ("MOTION_MASK", "0,0.3 1,0.3 1,0.7 0,0.7"),
        ],
    );
    let clips = |service: &Service| -> Vec<std::path::PathBuf> {
        walkdir::WalkDir::new(service.dir.path().join("clips"))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "mp4"))
            .map(|e| e.into_path())
            .collect()
    };
    let mut service = Service::start(&[], &masked);
    service.wait_for("camera connected", 1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(8));
    service.stop_cleanly();
    assert_eq!(service.count("motion: recording"), 0, "{}", service.log());
    assert!(clips(&service).is_empty() && service.spooled_clips().is_empty());

    let mut unmasked = masked.clone();
    unmasked.remove("MOTION_MASK");
    let mut service = Service::start(&[], &unmasked);
    service.wait_for("clip uploaded", 1, Duration::from_secs(30));
    service.stop_cleanly();
    let recorded = clips(&service);
    assert!(!recorded.is_empty(), "{}", service.log());
    let clip = decode_file(&recorded[0]);
    assert!(clip.frames_with_boxes * 2 >= clip.frames, "{clip:?}");
}

/// The `sig` value of a SAS URL, as it appears in the URL and decoded.
fn signature_forms(sas_url: &str) -> [String; 2] {
    let url = url::Url::parse(sas_url).unwrap();
    let decoded = url
        .query_pairs()
        .find(|(k, _)| k == "sig")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let raw = url
        .query()
        .unwrap()
        .split('&')
        .find_map(|p| p.strip_prefix("sig="))
        .unwrap()
        .to_string();
    [raw, decoded]
}

/// A service recording 5 s clips from a moving camera to Azurite with only a create/write container SAS
/// that expires `expires_in` from now (negative: expired).
fn service_with_a_cw_sas(expires_in: time::Duration) -> (Azurite, Camera, String, Service) {
    let azurite = Azurite::start();
    azurite.create_container(CONTAINER);
    let expiry = time::OffsetDateTime::now_utc() + expires_in;
    let sas_url = azurite.container_sas_url(CONTAINER, "cw", expiry);
    let camera = Camera::start(true);
    let env = service_env(
        &camera,
        None,
        &[
            ("RECORD_DURATION", "5s"),
            ("AZ_CONTAINER_SAS_URL", &sas_url),
        ],
    );
    let service = Service::start(&[], &env);
    (azurite, camera, sas_url, service)
}

#[test]
fn a_create_write_container_sas_uploads_the_clip_and_can_neither_list_nor_read() {
    let (azurite, mut camera, sas_url, mut service) =
        service_with_a_cw_sas(time::Duration::days(30));
    assert!(sas_url.contains("sp=cw"), "{sas_url}");
    one_motion_clip(&mut camera, &service, 5);

    let blobs = azurite.blobs(CONTAINER);
    assert_eq!(blobs.len(), 1, "{}", service.log());
    let (name, bytes) = &blobs[0];
    let clip = decode(bytes);
    assert!(clip.frames >= 60 && clip.frames_with_boxes > 0, "{clip:?}");
    let (content_md5, metadata) = azurite.properties(CONTAINER, name);
    assert_eq!(content_md5, Some(md5_base64(bytes)));
    assert_eq!(metadata.get("camera").map(String::as_str), Some("testcam"));
    assert!(service.spooled_clips().is_empty());
    // The same SAS that uploaded the clip cannot see it.
    assert_eq!(
        azurite.statuses_with_sas(&sas_url, name),
        (Some(403), Some(403)),
        "a cw SAS must not list or read"
    );
    service.stop_cleanly();
    let log = service.log();
    assert!(log.contains("(container SAS)"), "{log}");
    for sig in signature_forms(&sas_url) {
        assert!(!log.contains(&sig), "the SAS signature leaked:\n{log}");
    }
    service.assert_no_secrets();
}

#[test]
fn an_expired_container_sas_keeps_the_clip_on_disk_and_says_why() {
    let (azurite, mut camera, sas_url, mut service) =
        service_with_a_cw_sas(-time::Duration::hours(1));
    service.wait_for("motion: recording", 1, Duration::from_secs(30));
    camera.set_motion(false);
    service.wait_for("upload failed", 1, Duration::from_secs(20));
    let log = service.log();
    assert!(log.contains("AZ_CONTAINER_SAS_URL has expired"), "{log}");
    assert!(
        log.contains("refused the credentials (403") && log.contains("permanent=true"),
        "{log}"
    );
    assert_eq!(service.spooled_clips().len(), 1);
    service.terminate();
    assert_eq!(
        service.wait_exit(Duration::from_secs(30)).map(|s| s.code()),
        Some(Some(0))
    );
    assert_eq!(service.spooled_clips().len(), 1, "the clip must stay");
    assert!(azurite.blobs(CONTAINER).is_empty());
    let log = service.log();
    for sig in signature_forms(&sas_url) {
        assert!(!log.contains(&sig), "the SAS signature leaked:\n{log}");
    }
}

fn scrape(addr: &str) -> String {
    let (status, body) = http_get(addr, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn metrics_count_frames_clips_uploads_failures_spool_and_reconnects() {
    let mut azurite = Azurite::start();
    let mut camera = Camera::start(true);
    let addr = format!("127.0.0.1:{}", free_port());
    let env = service_env(
        &camera,
        Some(&azurite),
        &[("RECORD_DURATION", "5s"), ("METRICS_ADDR", &addr)],
    );
    let mut service = Service::start(&[], &env);
    service.wait_for("motion: recording", 1, Duration::from_secs(30));
    azurite.stop();
    camera.set_motion(false);
    service.wait_for("upload failed", 1, Duration::from_secs(20));

    let waiting = scrape(&addr);
    let on_disk: u64 = service
        .spooled_clips()
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(on_disk > 0);
    assert_eq!(metric(&waiting, "dachavideo_clips_started_total"), 1.0);
    assert_eq!(metric(&waiting, "dachavideo_clips_recorded_total"), 1.0);
    assert_eq!(metric(&waiting, "dachavideo_clips_uploaded_total"), 0.0);
    assert!(metric(&waiting, "dachavideo_upload_failures_total") >= 1.0);
    assert_eq!(metric(&waiting, "dachavideo_spool_clips"), 1.0);
    assert_eq!(metric(&waiting, "dachavideo_spool_bytes"), on_disk as f64);
    let frames = metric(&waiting, "dachavideo_camera_frames_total");
    assert!(frames >= 75.0, "{frames} frames in over 5 s");
    let detections = metric(&waiting, "dachavideo_detection_seconds_count");
    assert!(detections >= 70.0, "{detections} frames timed");
    let detection_seconds = metric(&waiting, "dachavideo_detection_seconds_sum") / detections;
    assert!(
        detection_seconds > 0.0 && detection_seconds < 0.067,
        "{detection_seconds} s per frame"
    );

    azurite.restart();
    service.wait_for("clip uploaded", 1, Duration::from_secs(60));
    let uploaded = scrape(&addr);
    assert_eq!(metric(&uploaded, "dachavideo_clips_uploaded_total"), 1.0);
    assert_eq!(
        metric(&uploaded, "dachavideo_uploaded_bytes_total"),
        on_disk as f64
    );
    assert_eq!(metric(&uploaded, "dachavideo_spool_bytes"), 0.0);
    assert!(metric(&uploaded, "dachavideo_camera_frames_total") > frames);
    assert_eq!(metric(&uploaded, "dachavideo_camera_reconnects_total"), 0.0);
    assert_eq!(metric(&uploaded, "dachavideo_camera_connected"), 1.0);

    camera.kill();
    service.wait_for("camera stream lost", 1, Duration::from_secs(15));
    assert_eq!(metric(&scrape(&addr), "dachavideo_camera_connected"), 0.0);
    camera.restart();
    service.wait_for("camera connected", 2, Duration::from_secs(20));
    let reconnected = scrape(&addr);
    assert_eq!(
        metric(&reconnected, "dachavideo_camera_reconnects_total"),
        1.0
    );
    assert_eq!(metric(&reconnected, "dachavideo_camera_connected"), 1.0);
    assert_eq!(http_get(&addr, "/nothing").map(|r| r.0), Some(404));
    service.stop_cleanly();
    assert!(
        http_get(&addr, "/metrics").is_none(),
        "still listening after exit"
    );
    service.assert_no_secrets();
}

#[test]
fn healthz_and_dachavideo_health_follow_the_camera_over_http() {
    let mut camera = Camera::start(false);
    let addr = format!("127.0.0.1:{}", free_port());
    let env = service_env(
        &camera,
        None,
        &[("HEALTH_MAX_FRAME_AGE", "4s"), ("METRICS_ADDR", &addr)],
    );
    // Run from an empty directory: no status file there, so a verdict can only come over HTTP.
    let elsewhere = tempfile::tempdir().unwrap();
    let health =
        |env: &std::collections::HashMap<String, String>| dachavideo_health(elsewhere.path(), env);
    let mut service = Service::start(&[], &env);
    service.wait_for("camera connected", 1, Duration::from_secs(20));
    assert!(
        wait_until(Duration::from_secs(10), || http_get(&addr, "/healthz")
            .is_some_and(|r| r.0 == 200)),
        "never healthy: {:?}",
        http_get(&addr, "/healthz")
    );
    let (_, body) = http_get(&addr, "/healthz").unwrap();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "healthy", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("last camera frame"),
        "{body}"
    );
    let (code, text) = health(&env);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("healthy: last camera frame"), "{text}");
    // METRICS_ADDR as compose has it (0.0.0.0): `health` asks this machine.
    let mut any_address = env.clone();
    any_address.insert("METRICS_ADDR".into(), addr.replace("127.0.0.1", "0.0.0.0"));
    assert_eq!(health(&any_address).0, Some(0));

    camera.kill();
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || http_get(&addr, "/healthz")
            .is_some_and(|r| r.0 == 503)),
        "still healthy without a camera: {:?}",
        http_get(&addr, "/healthz")
    );
    let noticed = killed.elapsed();
    assert!(
        noticed >= Duration::from_secs(3),
        "unhealthy after {noticed:?}, before HEALTH_MAX_FRAME_AGE (4 s)"
    );
    let (_, body) = http_get(&addr, "/healthz").unwrap();
    assert!(
        body.contains("\"unhealthy\"") && body.contains("no frame from the camera"),
        "{body}"
    );
    let (code, text) = health(&env);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("unhealthy: no frame from the camera"),
        "{text}"
    );

    service.stop_cleanly();
    let (code, text) = health(&env);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("not running"), "{text}");
}

#[test]
fn clip_events_reach_the_webhook_after_a_retry_and_carry_no_secret() {
    let hook = HookReceiver::start(1);
    let azurite = Azurite::start();
    azurite.create_container(CONTAINER);
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let sas_url = azurite.container_sas_url(CONTAINER, "cw", expiry);
    let webhook = format!(
        "http://hookuser:hook-pass-9@127.0.0.1:{}/hooks/dacha?token=hook-token-42",
        hook.port
    );
    let mut camera = Camera::start(true);
    let env = service_env(
        &camera,
        None,
        &[
            ("RECORD_DURATION", "5s"),
            // No pre-roll: the clip's length in the event is then exactly RECORD_DURATION.
            ("PRE_ROLL", "0s"),
            ("AZ_CONTAINER_SAS_URL", &sas_url),
            ("EVENT_WEBHOOK_URL", &webhook),
        ],
    );
    let mut service = Service::start(&[], &env);
    one_motion_clip(&mut camera, &service, 5);
    assert!(
        wait_until(Duration::from_secs(20), || hook.requests().len() >= 3),
        "{:#?}\n{}",
        hook.requests(),
        service.log()
    );
    service.stop_cleanly();

    let requests = hook.requests();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    let blobs = azurite.blobs(CONTAINER);
    assert_eq!(blobs.len(), 1);
    let name = &blobs[0].0;
    let events: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| serde_json::from_str(&r.body).expect("a JSON body"))
        .collect();
    // The first POST failed with 500 and was retried with the same event.
    assert_eq!(
        requests.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 200, 200]
    );
    assert_eq!(events[0], events[1]);
    let (started, uploaded) = (&events[1], &events[2]);
    assert_eq!(started["event"], "clip_started", "{started}");
    assert_eq!(uploaded["event"], "clip_uploaded", "{uploaded}");
    for event in [started, uploaded] {
        assert_eq!(event["clip"], name.as_str(), "{event}");
        assert_eq!(event["camera"], "testcam", "{event}");
    }
    assert_eq!(started["start"], uploaded["start"]);
    let (_, metadata) = azurite.properties(CONTAINER, name);
    assert_eq!(
        Some(&uploaded["start"].as_str().unwrap().to_string()),
        metadata.get("start")
    );
    assert!(uploaded["frames"].as_u64().unwrap() >= 60, "{uploaded}");
    assert!(
        (uploaded["seconds"].as_f64().unwrap() - 5.0).abs() < 0.5,
        "{uploaded}"
    );
    assert_eq!(uploaded["url"], azurite.blob_url(CONTAINER, name).as_str());
    for request in &requests {
        assert!(
            request
                .line
                .starts_with("POST /hooks/dacha?token=hook-token-42 "),
            "{request:?}"
        );
        assert_eq!(
            request.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        // The URL's user part becomes Basic authentication: hookuser:hook-pass-9.
        assert_eq!(
            request.headers.get("authorization").map(String::as_str),
            Some("Basic aG9va3VzZXI6aG9vay1wYXNzLTk=")
        );
        for secret in [CAMERA_PASSWORD, &AZURITE_KEY[..20], "sig=", "?", "hook-"] {
            assert!(
                !request.body.contains(secret),
                "{secret:?} in {}",
                request.body
            );
        }
    }
    let log = service.log();
    assert!(
        log.contains("clip events go to the webhook") && log.contains("/hooks/dacha?<redacted>"),
        "{log}"
    );
    for secret in ["hook-token-42", "hook-pass-9"] {
        assert!(!log.contains(secret), "{secret} leaked:\n{log}");
    }
    service.assert_no_secrets();
}

#[test]
fn a_webhook_that_is_down_holds_up_neither_clips_nor_the_stop() {
    let nobody = format!("http://127.0.0.1:{}/hook", free_port());
    let mut camera = Camera::start(true);
    let env = service_env(
        &camera,
        None,
        &[("RECORD_DURATION", "5s"), ("EVENT_WEBHOOK_URL", &nobody)],
    );
    let mut service = Service::start(&[], &env);
    one_motion_clip(&mut camera, &service, 5);
    let clips = walkdir::WalkDir::new(service.dir.path().join("clips"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "mp4"))
        .count();
    assert_eq!(clips, 1, "{}", service.log());
    let stopping = Instant::now();
    service.stop_cleanly();
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(8), "the stop took {took:?}");
    assert!(
        service
            .log()
            .contains("webhook events still unsent at shutdown were dropped"),
        "{}",
        service.log()
    );
}
