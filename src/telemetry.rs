//! Logging set-up and the redaction helpers every log line with a URL goes through.
//!
//! Events go to stdout, one line each, as text (no colour when stdout is not a terminal, so journald and
//! `docker logs` stay clean) or JSON. `RUST_LOG` filters; the default is `info`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use url::Url;

use crate::config::LogFormat;

/// Installs the global subscriber, writing to stdout. Call once, after the configuration was read.
pub fn init(format: LogFormat) {
    install(format, false);
}

/// Like [`init`], but to stderr, for commands whose stdout is data.
pub fn init_stderr(format: LogFormat) {
    install(format, true);
}

fn install(format: LogFormat, to_stderr: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,azure_core=warn,azure_storage=warn,azure_storage_blobs=warn")
    });
    let is_terminal = if to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let writer = BoxMakeWriter::new(move || -> Box<dyn std::io::Write> {
        if to_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        }
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(is_terminal).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// A URL for logs: the password replaced by `***`, and a SAS signature (`sig=`) likewise.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Cannot fail: the URL has a host, since it has credentials.
        let _ = shown.set_password(Some("***"));
    }
    if shown.query().is_some() {
        let pairs: Vec<(String, String)> = shown
            .query_pairs()
            .map(|(k, v)| {
                let value = if k.eq_ignore_ascii_case("sig") {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), value)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// Free text (an error message) with the query part of any URL in it removed, since a query may hold a
/// SAS signature.
pub fn redact_queries(text: &str) -> String {
    text.split_inclusive(char::is_whitespace)
        .map(|word| match (word.contains("://"), word.find('?')) {
            (true, Some(at)) => {
                let trailing: String = word
                    .chars()
                    .rev()
                    .take_while(|c| c.is_whitespace() || *c == ')')
                    .collect();
                format!(
                    "{}?<redacted>{}",
                    &word[..at],
                    trailing.chars().rev().collect::<String>()
                )
            }
            _ => word.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_signatures_are_hidden() {
        let url = Url::parse("rtsp://admin:s3cret@cam:554/live").unwrap();
        assert_eq!(redact_url(&url), "rtsp://admin:***@cam:554/live");
        let url =
            Url::parse("https://acct.blob.core.windows.net/c?sv=2022&sig=abc%2Bdef&sp=cw").unwrap();
        let shown = redact_url(&url);
        assert!(!shown.contains("abc"), "{shown}");
        assert!(shown.contains("sp=cw"), "{shown}");
        let url = Url::parse("rtsp://cam/live").unwrap();
        assert_eq!(redact_url(&url), "rtsp://cam/live");
        let text = "error sending request for url (http://h/c/b?comp=block&sig=SECRET) refused";
        assert_eq!(
            redact_queries(text),
            "error sending request for url (http://h/c/b?<redacted>) refused"
        );
    }
}
