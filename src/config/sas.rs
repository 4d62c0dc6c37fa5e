//! `AZ_CONTAINER_SAS_URL`: a container SAS URL, the least-privilege alternative to an account connection
//! string. With `sp=cw` the service can create and write blobs but not read, list or delete them, so a
//! stolen device gives away no footage.
//!
//! Parsed once here into the endpoint, the container and the SAS query (a secret: it holds `sig`). No error
//! or `Debug` output ever shows the query.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use url::Url;

use super::ConfigError;

const VAR: &str = "AZ_CONTAINER_SAS_URL";
const EXAMPLE: &str =
    "https://ACCOUNT.blob.core.windows.net/CONTAINER?sv=...&sp=cw&se=...&sr=c&sig=...";

/// A container SAS: where the container is and the token that grants access to it.
#[derive(Clone)]
pub struct ContainerSas {
    /// The account's blob endpoint without a trailing slash: `https://acct.blob.core.windows.net`, or
    /// `http://127.0.0.1:10000/devstoreaccount1` for a path-style URL (Azurite).
    pub endpoint: String,
    pub account: String,
    pub container: String,
    /// `sp`: the permission letters, when the URL has them (a stored access policy may hold them instead).
    pub permissions: Option<String>,
    /// `se`: when the signature stops working, when the URL says.
    pub expiry: Option<OffsetDateTime>,
    /// The whole query string, `sig` included.
    query: SecretString,
}

impl ContainerSas {
    /// Parses a SAS URL; a bad one gives a one-line error that never contains the signature.
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let url = Url::parse(raw.trim())
            .map_err(|e| ConfigError::new(VAR, format!("not a URL ({e}); expected {EXAMPLE}")))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(ConfigError::new(
                VAR,
                format!(
                    "scheme must be https, not {:?}; expected {EXAMPLE}",
                    url.scheme()
                ),
            ));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| ConfigError::new(VAR, "has no host"))?;
        let segments: Vec<&str> = url
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        // https://acct.blob.core.windows.net/container, or path-style http://host:port/acct/container.
        let (account, container) = match segments.as_slice() {
            [container] => (host.split('.').next().unwrap_or(host), *container),
            [account, container] => (*account, *container),
            [] => {
                return Err(ConfigError::new(
                    VAR,
                    format!("names no container; expected {EXAMPLE}"),
                ));
            }
            _ => {
                return Err(ConfigError::new(
                    VAR,
                    format!("must name a container, not a blob; expected {EXAMPLE}"),
                ));
            }
        };
        if !super::is_container_name(container) {
            // Not echoed: a URL pasted without its '?' would show the signature here.
            return Err(ConfigError::new(
                VAR,
                "the container in the path is not a valid container name: 3-63 lowercase letters, digits \
                 and single hyphens",
            ));
        }
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let value = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        if value("sig").is_none_or(str::is_empty) {
            return Err(ConfigError::new(
                VAR,
                "has no signature (sig=): copy the whole SAS URL, query included",
            ));
        }
        if value("sr").is_some_and(|r| r != "c") {
            return Err(ConfigError::new(
                VAR,
                "is not a container SAS (expected sr=c): make one with `az storage container generate-sas`",
            ));
        }
        let expiry = value("se")
            .map(|se| {
                parse_sas_time(se).ok_or_else(|| {
                    ConfigError::new(
                        VAR,
                        "se= (expiry) is not a date and time like 2030-01-31T00:00:00Z",
                    )
                })
            })
            .transpose()?;
        let mut endpoint = url.clone();
        endpoint.set_query(None);
        endpoint.set_fragment(None);
        let endpoint = endpoint.as_str().trim_end_matches('/');
        let endpoint = endpoint
            .strip_suffix(container)
            .unwrap_or(endpoint)
            .trim_end_matches('/')
            .to_string();
        Ok(Self {
            endpoint,
            account: account.to_string(),
            container: container.to_string(),
            permissions: value("sp").map(str::to_string),
            expiry,
            query: SecretString::from(url.query().unwrap_or_default().to_string()),
        })
    }

    /// The SAS query, signature included: only for the storage client.
    pub fn expose_query(&self) -> &str {
        self.query.expose_secret()
    }

    /// What the permission letters mean, e.g. `create, write`.
    pub fn permission_names(&self) -> Option<String> {
        self.permissions.as_deref().map(permission_names)
    }

    /// Permissions granted beyond what uploads need (`c`, `w`): they let a stolen device see or destroy
    /// footage.
    pub fn excess_permissions(&self) -> String {
        self.permissions
            .as_deref()
            .unwrap_or_default()
            .chars()
            .filter(|c| !matches!(c, 'c' | 'w'))
            .collect()
    }

    /// Whether the SAS lacks `w` (Put Block and Put Block List need it).
    pub fn lacks_write(&self) -> bool {
        self.permissions
            .as_deref()
            .is_some_and(|p| !p.contains('w'))
    }
}

impl fmt::Debug for ContainerSas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerSas")
            .field("endpoint", &self.endpoint)
            .field("container", &self.container)
            .field("permissions", &self.permissions)
            .field("expiry", &self.expiry)
            .field("query", &"<redacted>")
            .finish()
    }
}

/// Names for SAS permission letters: `cw` is `create, write`.
pub fn permission_names(letters: &str) -> String {
    letters
        .chars()
        .map(|c| match c {
            'r' => "read",
            'a' => "add",
            'c' => "create",
            'w' => "write",
            'd' => "delete",
            'x' => "delete versions",
            'y' => "permanent delete",
            'l' => "list",
            't' => "tags",
            'f' => "find by tags",
            'm' => "move",
            'e' => "execute",
            'o' => "ownership",
            'p' => "permissions",
            'i' => "immutability policy",
            _ => "unknown",
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `se`/`st` as Azure accepts them: `2026-01-31`, `2026-01-31T12:00Z`, `2026-01-31T12:00:00Z`.
fn parse_sas_time(raw: &str) -> Option<OffsetDateTime> {
    if let Ok(time) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Some(time);
    }
    if let Ok(time) = time::PrimitiveDateTime::parse(
        raw,
        format_description!("[year]-[month]-[day]T[hour]:[minute]Z"),
    ) {
        return Some(time.assume_utc());
    }
    time::Date::parse(raw, format_description!("[year]-[month]-[day]"))
        .ok()
        .map(|date| date.midnight().assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str = "c2VjcmV0LXNpZ25hdHVyZQ%3D%3D";

    #[test]
    fn public_and_path_style_urls_give_endpoint_account_and_container() {
        let sas = ContainerSas::parse(&format!(
            "https://acct.blob.core.windows.net/dacha-clips?sv=2022-11-02&sp=cw&se=2030-01-01T00:00:00Z&sr=c&sig={SIG}"
        ))
        .unwrap();
        assert_eq!(sas.endpoint, "https://acct.blob.core.windows.net");
        assert_eq!(sas.account, "acct");
        assert_eq!(sas.container, "dacha-clips");
        assert_eq!(sas.permission_names().as_deref(), Some("create, write"));
        assert_eq!(sas.excess_permissions(), "");
        assert!(!sas.lacks_write());
        assert_eq!(sas.expiry.map(|e| e.year()), Some(2030));
        assert!(sas.expose_query().contains(SIG));
        assert!(!format!("{sas:?}").contains(SIG));

        let sas = ContainerSas::parse(&format!(
            "http://127.0.0.1:10000/devstoreaccount1/dacha-clips/?sp=racwdl&se=2030-01-01&sig={SIG}"
        ))
        .unwrap();
        assert_eq!(sas.endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        assert_eq!(sas.account, "devstoreaccount1");
        assert_eq!(sas.excess_permissions(), "radl");
    }

    #[test]
    fn bad_urls_are_one_line_errors_without_the_signature() {
        for bad in [
            format!("acct.blob.core.windows.net/c?sig={SIG}"),
            format!("ftp://acct.blob.core.windows.net/clips?sig={SIG}"),
            format!("https://acct.blob.core.windows.net/?sp=cw&sig={SIG}"),
            format!("https://acct.blob.core.windows.net/clips/cam/a.mp4?sp=cw&sig={SIG}"),
            format!("https://acct.blob.core.windows.net/Bad_Name?sp=cw&sig={SIG}"),
            "https://acct.blob.core.windows.net/clips?sp=cw&se=2030-01-01".to_string(),
            format!("https://acct.blob.core.windows.net/clips?sp=cw&sr=b&sig={SIG}"),
            format!("https://acct.blob.core.windows.net/clips?sp=cw&se=tomorrow&sig={SIG}"),
            format!("https://acct.blob.core.windows.net/clips?sp=cw&se=2030-01-01 {SIG}"),
        ] {
            let error = ContainerSas::parse(&bad).unwrap_err();
            let text = error.to_string();
            assert_eq!(error.variable, VAR, "{text}");
            assert!(!text.contains(SIG) && !text.contains("c2VjcmV0"), "{text}");
            assert_eq!(text.lines().count(), 1, "{text}");
        }
    }

    #[test]
    fn sas_times_in_the_forms_azure_accepts() {
        for raw in ["2030-01-31", "2030-01-31T12:00Z", "2030-01-31T12:00:00Z"] {
            assert!(parse_sas_time(raw).is_some(), "{raw}");
        }
        assert!(parse_sas_time("31.01.2030").is_none());
    }
}
