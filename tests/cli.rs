//! The command line: bad configuration, `detect` on a video with known motion, `--help`, `--version`.

mod support;

use std::process::{Command, Output};

use support::*;

fn dachavideo(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dachavideo"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("run dachavideo")
}

/// Standard output and standard error together.
fn all_output(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

const URL: &str = "rtsp://watcher:dacha-pass-7Q2@127.0.0.1:9/stream";

const SAS_URL: &str =
    "https://acct.blob.core.windows.net/clips?sv=2022-11-02&sp=cw&sr=c&sig=U0FTLXNpZ25hdHVyZQ";

fn connstring(key: &str) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};\
         BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    )
}

#[test]
fn bad_configuration_exits_2_with_one_line_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let good_connstring = connstring(AZURITE_KEY);
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("RTSP_URL", vec![]),
        (
            "RTSP_URL",
            vec![("RTSP_URL", "http://watcher:dacha-pass-7Q2@cam/stream")],
        ),
        (
            "RTSP_URL",
            vec![("RTSP_URL", "watcher:dacha-pass-7Q2 camera")],
        ),
        (
            "RECORD_DURATION",
            vec![("RTSP_URL", URL), ("RECORD_DURATION", "30 sekund")],
        ),
        (
            "RECONNECT_INTERVAL",
            vec![("RTSP_URL", URL), ("RECONNECT_INTERVAL", "often")],
        ),
        (
            "SHUTDOWN_GRACE",
            vec![("RTSP_URL", URL), ("SHUTDOWN_GRACE", "0s")],
        ),
        (
            "MOTION_MIN_AREA",
            vec![("RTSP_URL", URL), ("MOTION_MIN_AREA", "-5")],
        ),
        (
            "LOG_FORMAT",
            vec![("RTSP_URL", URL), ("LOG_FORMAT", "yaml")],
        ),
        (
            "MOTION_MASK",
            vec![("RTSP_URL", URL), ("MOTION_MASK", "0,0 1,0 1,2")],
        ),
        (
            "MIN_MOTION_FRAMES",
            vec![("RTSP_URL", URL), ("MIN_MOTION_FRAMES", "0")],
        ),
        (
            "AZ_CONTAINER_NAME",
            vec![
                ("RTSP_URL", URL),
                ("AZ_STORAGE_CONNSTRING", &good_connstring),
            ],
        ),
        (
            "AZ_STORAGE_CONNSTRING",
            vec![("RTSP_URL", URL), ("AZ_CONTAINER_NAME", "clips")],
        ),
        (
            "AZ_CONTAINER_NAME",
            vec![
                ("RTSP_URL", URL),
                ("AZ_STORAGE_CONNSTRING", &good_connstring),
                ("AZ_CONTAINER_NAME", "Dacha_Clips"),
            ],
        ),
        (
            "AZ_STORAGE_CONNSTRING",
            vec![
                ("RTSP_URL", URL),
                (
                    "AZ_STORAGE_CONNSTRING",
                    "AccountName=devstoreaccount1;AccountKey",
                ),
                ("AZ_CONTAINER_NAME", "clips"),
            ],
        ),
        (
            "METRICS_ADDR",
            vec![("RTSP_URL", URL), ("METRICS_ADDR", "localhost:9090")],
        ),
        (
            "EVENT_WEBHOOK_URL",
            vec![
                ("RTSP_URL", URL),
                (
                    "EVENT_WEBHOOK_URL",
                    "hub.local/hook?token=U0FTLXNpZ25hdHVyZQ",
                ),
            ],
        ),
        (
            "AZ_CONTAINER_SAS_URL",
            vec![
                ("RTSP_URL", URL),
                ("AZ_CONTAINER_SAS_URL", SAS_URL),
                ("AZ_STORAGE_CONNSTRING", &good_connstring),
                ("AZ_CONTAINER_NAME", "clips"),
            ],
        ),
        (
            "AZ_CONTAINER_SAS_URL",
            vec![
                ("RTSP_URL", URL),
                ("AZ_CONTAINER_SAS_URL", SAS_URL),
                ("AZ_CONTAINER_NAME", "clips"),
            ],
        ),
        (
            "AZ_CONTAINER_SAS_URL",
            vec![
                ("RTSP_URL", URL),
                // Pasted without its '?': the signature ends up in the path.
                (
                    "AZ_CONTAINER_SAS_URL",
                    "https://acct.blob.core.windows.net/clipssp=cw&sig=U0FTLXNpZ25hdHVyZQ",
                ),
            ],
        ),
        (
            "AZ_CONTAINER_SAS_URL",
            vec![
                ("RTSP_URL", URL),
                (
                    "AZ_CONTAINER_SAS_URL",
                    "acct.blob.core.windows.net/clips?sp=cw&sig=U0FTLXNpZ25hdHVyZQ",
                ),
            ],
        ),
        (
            "AZ_CONTAINER_SAS_URL",
            vec![
                ("RTSP_URL", URL),
                (
                    "AZ_CONTAINER_SAS_URL",
                    "https://acct.blob.core.windows.net/clips?sp=cw&se=U0FTLXNpZ25hdHVyZQ",
                ),
            ],
        ),
    ];
    for (variable, env) in cases {
        for command in [&[][..], &["check"][..]] {
            let output = dachavideo(command, &env, dir.path());
            let stderr = String::from_utf8_lossy(&output.stderr);
            let all = format!("{}{stderr}", String::from_utf8_lossy(&output.stdout));
            assert_eq!(output.status.code(), Some(2), "{variable} {env:?}: {all}");
            assert_eq!(stderr.lines().count(), 1, "{variable}: {all}");
            assert!(stderr.contains(variable), "{variable} not named: {stderr}");
            assert!(!all.contains(CAMERA_PASSWORD), "password leaked: {all}");
            assert!(!all.contains(&AZURITE_KEY[..20]), "key leaked: {all}");
            assert!(
                !all.contains("U0FTLXNpZ25hdHVyZQ"),
                "SAS signature leaked: {all}"
            );
        }
    }
}

#[test]
fn a_dot_env_file_is_read_and_set_variables_win() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "RTSP_URL=rtsp://cam/stream\nRECORD_DURATION=soon\n",
    )
    .unwrap();
    let output = dachavideo(&["check"], &[], dir.path());
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("RECORD_DURATION"));
    let output = dachavideo(
        &["check"],
        &[("RECORD_DURATION", "1s"), ("CAMERA_OPEN_TIMEOUT", "1s")],
        dir.path(),
    );
    // Configuration accepted; the camera at rtsp://cam is not there.
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("camera   FAIL"));
}

#[test]
fn check_reports_camera_and_storage_and_fails_on_a_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    let azurite = Azurite::start();
    let camera = Camera::start(false);
    let good = azurite.connection_string();
    let env = [
        ("RTSP_URL", camera.url()),
        ("AZ_STORAGE_CONNSTRING", good),
        ("AZ_CONTAINER_NAME", CONTAINER.into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let output = dachavideo(&["check"], &env, dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("camera   ok") && stdout.contains("640x360"),
        "{stdout}"
    );
    assert!(stdout.contains("storage  ok"), "{stdout}");

    let wrong = azurite.connection_string_with_key(&AZURITE_KEY.replace("Eby8", "Xby8"));
    let mut env = env.clone();
    env[1] = ("AZ_STORAGE_CONNSTRING", &wrong);
    let output = dachavideo(&["check"], &env, dir.path());
    let all = all_output(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("storage  FAIL") && all.contains("403"),
        "{all}"
    );
    assert!(
        !all.contains(CAMERA_PASSWORD) && !all.contains(&AZURITE_KEY[8..30]),
        "{all}"
    );

    let wrong_password = camera.url().replace(CAMERA_PASSWORD, "not-the-password");
    env[0] = ("RTSP_URL", &wrong_password);
    let output = dachavideo(&["check"], &env, dir.path());
    let all = all_output(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("camera   FAIL") && all.contains("401"),
        "{all}"
    );
    assert!(!all.contains("not-the-password"), "{all}");
}

#[test]
fn check_with_a_container_sas_reports_its_permissions_and_writes_nothing_visible() {
    let dir = tempfile::tempdir().unwrap();
    let azurite = Azurite::start();
    azurite.create_container(CONTAINER);
    let camera = Camera::start(false);
    let now = time::OffsetDateTime::now_utc();
    let check = |sas_url: &str| {
        let output = dachavideo(
            &["check"],
            &[
                ("RTSP_URL", camera.url().as_str()),
                ("AZ_CONTAINER_SAS_URL", sas_url),
            ],
            dir.path(),
        );
        let sig = sas_url.split("sig=").nth(1).unwrap().to_string();
        let all = all_output(&output);
        assert!(!all.contains(&sig), "the signature leaked: {all}");
        (output.status.code(), all)
    };

    let (code, all) =
        check(&azurite.container_sas_url(CONTAINER, "cw", now + time::Duration::days(90)));
    assert_eq!(code, Some(0), "{all}");
    assert!(
        all.contains("sas      ok    grants create, write (sp=cw); expires")
            && all.contains("(in 89 days)"),
        "{all}"
    );
    assert!(
        all.contains("storage  ok") && all.contains("a test block was accepted"),
        "{all}"
    );
    assert!(
        azurite.blobs(CONTAINER).is_empty(),
        "check must leave no blob behind"
    );

    let (code, all) =
        check(&azurite.container_sas_url(CONTAINER, "cw", now + time::Duration::days(3)));
    assert_eq!(code, Some(0), "{all}");
    assert!(
        all.contains("sas      WARN") && all.contains("make a new one"),
        "{all}"
    );

    let (code, all) =
        check(&azurite.container_sas_url(CONTAINER, "rcwdl", now + time::Duration::days(90)));
    assert_eq!(code, Some(0), "{all}");
    assert!(
        all.contains("sas      WARN") && all.contains("also grants read, delete, list"),
        "{all}"
    );

    let (code, all) =
        check(&azurite.container_sas_url(CONTAINER, "cw", now - time::Duration::hours(2)));
    assert_eq!(code, Some(1), "{all}");
    assert!(
        all.contains("sas      FAIL") && all.contains("expired"),
        "{all}"
    );
    assert!(
        all.contains("storage  FAIL") && all.contains("403"),
        "{all}"
    );

    let missing =
        azurite.container_sas_url("no-such-container", "cw", now + time::Duration::days(9));
    let (code, all) = check(&missing);
    assert_eq!(code, Some(1), "{all}");
    assert!(
        all.contains("storage  FAIL") && all.contains("the container does not exist"),
        "{all}"
    );
}

#[test]
fn a_metrics_address_in_use_stops_the_start_with_a_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = dachavideo(
        &[],
        &[("RTSP_URL", URL), ("METRICS_ADDR", &addr)],
        dir.path(),
    );
    let all = all_output(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains(&format!("METRICS_ADDR {addr}: cannot listen")),
        "{all}"
    );
    assert!(!all.contains(CAMERA_PASSWORD), "{all}");
}

#[test]
fn detect_reports_the_clip_over_the_seconds_with_motion() {
    let dir = tempfile::tempdir().unwrap();
    let video = motion_video(dir.path());
    let out = dir.path().join("out");
    let output = dachavideo(
        &[
            "detect",
            video.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[("RECORD_DURATION", "5s")],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let clips: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(clips.len(), 1, "{stdout}");
    let clip = &clips[0];
    let start = clip["start"].as_f64().unwrap();
    let motion_start = clip["motion_start"].as_f64().unwrap();
    let end = clip["end"].as_f64().unwrap();
    // The box enters at 4 s and is fully in view by about 4.5 s; clips last 5 s from there, after the
    // default 3 s of pre-roll.
    assert!((3.9..=4.8).contains(&motion_start), "{clip}");
    assert!((motion_start - start - 3.0).abs() < 0.001, "{clip}");
    assert!((end - motion_start - 5.0).abs() < 0.1, "{clip}");
    assert!(clip["boxes"].as_u64().unwrap() >= 30, "{clip}");
    let path = std::path::PathBuf::from(clip["clip"].as_str().unwrap());
    let decoded = decode_file(&path);
    assert_eq!(u64::from(decoded.frames), clip["frames"].as_u64().unwrap());
    assert!(decoded.frames_with_boxes >= 30, "{decoded:?}");
}

#[test]
fn help_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let version = dachavideo(&["--version"], &[], dir.path());
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("dachavideo {}", env!("CARGO_PKG_VERSION"))
    );
    let help = dachavideo(&["--help"], &[], dir.path());
    let text = String::from_utf8_lossy(&help.stdout);
    for word in ["check", "detect", "run"] {
        assert!(text.contains(word), "{text}");
    }
}
