//! The camera URL split in two: the address that GStreamer and the diagnosis see (and may print), which
//! carries no credentials, and the user and password as typed (`p%40ss` in the URL is `p@ss`).

use url::Url;

/// A camera's address without credentials, and the credentials apart.
pub struct SplitUrl {
    pub address: Url,
    /// Empty when the URL names no user.
    pub user: String,
    pub password: Option<String>,
}

pub fn split(url: &str) -> Result<SplitUrl, url::ParseError> {
    let mut address = Url::parse(url)?;
    let user = percent_decoded(address.username());
    let password = address.password().map(percent_decoded);
    let _ = address.set_username("");
    let _ = address.set_password(None);
    Ok(SplitUrl {
        address,
        user,
        password,
    })
}

/// A URL's user or password as typed (a `+` stays a plus).
fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_percent_decoded_and_left_out_of_the_address() {
        let camera = split("rtsp://ad%40min:p%40ss%3Aword+x@10.0.0.5:554/stream1").unwrap();
        assert_eq!(camera.user, "ad@min");
        assert_eq!(camera.password.as_deref(), Some("p@ss:word+x"));
        assert_eq!(camera.address.as_str(), "rtsp://10.0.0.5:554/stream1");
        let anonymous = split("rtsp://10.0.0.5/live").unwrap();
        assert_eq!((anonymous.user.as_str(), anonymous.password), ("", None));
    }
}
