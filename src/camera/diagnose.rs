//! Why a camera cannot be opened. GStreamer's error names what failed, rarely why a user should care. After a
//! failed open this asks the camera once more with an RTSP DESCRIBE (the `retina` client) and turns its
//! answer into a sentence a user can act on: wrong user or password, wrong path, nothing listening, no
//! answer. The password is never part of the result.

use std::time::Duration;

use retina::client::{Credentials, Session, SessionOptions};

use crate::config::CameraUrl;

/// A one-line cause, or `None` when the camera answers DESCRIBE fine (the problem is elsewhere).
pub fn diagnose(url: &CameraUrl, timeout: Duration) -> Option<String> {
    // The URL retina sees (and may print in errors) carries no credentials; they go as typed.
    let split = super::credentials::split(url.expose()).ok()?;
    let creds = split.password.map(|password| Credentials {
        username: split.user,
        password,
    });
    let address = split.address;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let describe = Session::describe(address, SessionOptions::default().creds(creds));
    let answer = runtime.block_on(async { tokio::time::timeout(timeout, describe).await });
    match answer {
        Err(_) => Some(format!(
            "the camera did not answer within {}",
            humantime::format_duration(timeout)
        )),
        Ok(Ok(_)) => None,
        Ok(Err(error)) => Some(explain(&error.to_string())),
    }
}

fn explain(error: &str) -> String {
    let cause = if error.contains("401") {
        "the camera refused the user or password (401 Unauthorized): check the credentials in RTSP_URL"
    } else if error.contains("404") {
        "the camera has no stream at this path (404 Not Found): check the path in RTSP_URL"
    } else if error.contains("Connection refused") {
        "connection refused: the host answers but nothing listens on that port"
    } else if error.contains("No route to host") || error.contains("unreachable") {
        "the camera's address is unreachable from here"
    } else {
        return format!(
            "RTSP DESCRIBE failed: {}",
            error.lines().next().unwrap_or(error)
        );
    };
    cause.to_string()
}
