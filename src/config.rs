//! Every setting of the service, read once from the environment (and an optional `.env` file) into typed,
//! validated values.
//!
//! [`RawEnv`] (via `envconfig`) says which variables exist and their defaults; [`Settings::from_raw`] turns
//! them into typed values and rejects a bad one with a [`ConfigError`] that names the variable and the reason.
//! No other module reads the environment. Secrets (the RTSP password, the storage account key) are held in
//! types whose `Debug`/`Display` redact them.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use envconfig::Envconfig;
use secrecy::SecretString;
use url::Url;

use crate::motion::MotionMask;
use crate::spool::SpoolLimits;

mod sas;
pub use sas::{ContainerSas, permission_names as sas_permission_names};

/// A configuration value that cannot be used; `Display` is one line naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

impl ConfigError {
    fn new(variable: &'static str, reason: impl Into<String>) -> Self {
        Self {
            variable,
            reason: reason.into(),
        }
    }
}

/// The variables as strings, with their defaults. An empty value counts as unset.
#[derive(Envconfig)]
pub struct RawEnv {
    #[envconfig(from = "RTSP_URL")]
    pub rtsp_url: Option<String>,
    #[envconfig(from = "CAMERA_NAME")]
    pub camera_name: Option<String>,
    #[envconfig(from = "AZ_STORAGE_CONNSTRING")]
    pub az_storage_connstring: Option<String>,
    #[envconfig(from = "AZ_CONTAINER_NAME")]
    pub az_container_name: Option<String>,
    #[envconfig(from = "AZ_CONTAINER_SAS_URL")]
    pub az_container_sas_url: Option<String>,
    #[envconfig(from = "CLIPS_DIR", default = "clips")]
    pub clips_dir: String,
    #[envconfig(from = "SPOOL_DIR", default = "spool")]
    pub spool_dir: String,
    #[envconfig(from = "RECORD_DURATION", default = "30s")]
    pub record_duration: String,
    #[envconfig(from = "RECORD_MODE", default = "fixed")]
    pub record_mode: String,
    #[envconfig(from = "PRE_ROLL", default = "3s")]
    pub pre_roll: String,
    #[envconfig(from = "PRE_ROLL_MAX_MEMORY", default = "64MiB")]
    pub pre_roll_max_memory: String,
    #[envconfig(from = "POST_ROLL", default = "5s")]
    pub post_roll: String,
    #[envconfig(from = "MAX_CLIP", default = "2m")]
    pub max_clip: String,
    #[envconfig(from = "RECONNECT_INTERVAL", default = "10s")]
    pub reconnect_interval: String,
    #[envconfig(from = "CAMERA_OPEN_TIMEOUT", default = "10s")]
    pub camera_open_timeout: String,
    #[envconfig(from = "CAMERA_READ_TIMEOUT", default = "5s")]
    pub camera_read_timeout: String,
    #[envconfig(from = "MOTION_MIN_AREA", default = "5000")]
    pub motion_min_area: String,
    #[envconfig(from = "SHUTDOWN_GRACE", default = "20s")]
    pub shutdown_grace: String,
    #[envconfig(from = "LOG_FORMAT", default = "text")]
    pub log_format: String,
    #[envconfig(from = "SPOOL_MAX_BYTES", default = "4GiB")]
    pub spool_max_bytes: String,
    #[envconfig(from = "SPOOL_MIN_FREE", default = "256MiB")]
    pub spool_min_free: String,
    #[envconfig(from = "UPLOAD_RETRY_MAX", default = "5m")]
    pub upload_retry_max: String,
    #[envconfig(from = "HEALTH_MAX_FRAME_AGE", default = "60s")]
    pub health_max_frame_age: String,
    #[envconfig(from = "MOTION_MASK")]
    pub motion_mask: Option<String>,
    #[envconfig(from = "MIN_MOTION_FRAMES", default = "3")]
    pub min_motion_frames: String,
    #[envconfig(from = "METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    #[envconfig(from = "EVENT_WEBHOOK_URL")]
    pub event_webhook_url: Option<String>,
}

impl RawEnv {
    /// Reads the process environment (after `.env` was merged into it by the caller).
    pub fn from_process_env() -> Result<Self, ConfigError> {
        Self::init_from_env().map_err(envconfig_error)
    }

    /// Reads from a map, for tests.
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::init_from_hashmap(map).map_err(envconfig_error)
    }
}

fn envconfig_error(error: envconfig::Error) -> ConfigError {
    match error {
        envconfig::Error::EnvVarMissing { name } => ConfigError::new(name, "is required"),
        envconfig::Error::ParseError { name } => ConfigError::new(name, "is not valid unicode"),
    }
}

/// An RTSP URL whose password never reaches a log: `Display` and `Debug` print `rtsp://user:***@host/path`.
#[derive(Clone)]
pub struct CameraUrl(Url);

impl CameraUrl {
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        const VAR: &str = "RTSP_URL";
        // Never echo the raw value: it may carry the password.
        let url = Url::parse(raw).map_err(|e| {
            ConfigError::new(
                VAR,
                format!("not a URL ({e}); expected rtsp://user:pass@host:port/path"),
            )
        })?;
        if !matches!(url.scheme(), "rtsp" | "rtsps") {
            return Err(ConfigError::new(
                VAR,
                format!(
                    "scheme must be rtsp or rtsps, not {:?}; expected rtsp://user:pass@host:port/path",
                    url.scheme()
                ),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::new(VAR, "has no host"));
        }
        Ok(Self(url))
    }

    /// The full URL, password included: only for handing to the video library.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }
}

impl fmt::Display for CameraUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::telemetry::redact_url(&self.0))
    }
}

impl fmt::Debug for CameraUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CameraUrl({self})")
    }
}

/// How the camera is reached and how hard we try.
#[derive(Debug, Clone)]
pub struct CameraSettings {
    pub url: CameraUrl,
    pub open_timeout: Duration,
    pub read_timeout: Duration,
    pub reconnect_interval: Duration,
}

/// Detector tuning.
#[derive(Debug, Clone)]
pub struct MotionSettings {
    /// Smallest moving region that counts, in pixels of the full-resolution frame.
    pub min_area: f64,
    /// Parts of the frame where motion is ignored (`MOTION_MASK`).
    pub mask: MotionMask,
    /// Analysed frames in a row that must show motion before it counts (`MIN_MOTION_FRAMES`).
    pub min_frames: u32,
}

/// When a clip ends (`RECORD_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipPolicy {
    /// `fixed`: motion starts a clip of `RECORD_DURATION` (the original service's behaviour).
    Fixed { duration: Duration },
    /// `motion`: the clip lasts while motion does, plus `POST_ROLL`; at `MAX_CLIP` the next clip goes on
    /// without a gap.
    FollowMotion {
        post_roll: Duration,
        max_clip: Duration,
    },
}

/// How clips are cut: when they end, and how much of the time before the motion they keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClipSettings {
    pub policy: ClipPolicy,
    /// Kept before the first motion frame (`PRE_ROLL`, zero for none).
    pub pre_roll: Duration,
    /// The most memory the pre-roll's packets may hold (`PRE_ROLL_MAX_MEMORY`); a longer pre-roll is cut to it.
    pub pre_roll_max_bytes: u64,
}

impl ClipSettings {
    /// One line for logs and `check`: `fixed 30s + 3s pre-roll`.
    pub fn summary(&self) -> String {
        let policy = match self.policy {
            ClipPolicy::Fixed { duration } => {
                format!("fixed {}", humantime::format_duration(duration))
            }
            ClipPolicy::FollowMotion {
                post_roll,
                max_clip,
            } => format!(
                "motion + {} post-roll, at most {}",
                humantime::format_duration(post_roll),
                humantime::format_duration(max_clip)
            ),
        };
        format!(
            "{policy}, {} pre-roll",
            humantime::format_duration(self.pre_roll)
        )
    }
}

/// How clips are cut and named.
#[derive(Debug, Clone)]
pub struct RecorderSettings {
    pub camera_name: String,
    pub clips: ClipSettings,
}

/// Where finished clips go.
#[derive(Debug, Clone)]
pub enum StorageSettings {
    Azure(AzureSettings),
    LocalDir(PathBuf),
}

/// How the service proves itself to Azure; both hold secrets and print redacted.
#[derive(Clone)]
pub enum AzureCredential {
    /// `AZ_STORAGE_CONNSTRING`: the account key (or a SAS inside the string); may create the container.
    ConnectionString(SecretString),
    /// `AZ_CONTAINER_SAS_URL`: a container SAS, ideally `sp=cw`; cannot create the container nor read.
    ContainerSas(ContainerSas),
}

/// Azure Blob Storage: a credential and a container.
#[derive(Clone)]
pub struct AzureSettings {
    pub credential: AzureCredential,
    pub account: String,
    /// `BlobEndpoint=` of the connection string (Azurite, private endpoints), without a trailing slash.
    pub blob_endpoint: Option<String>,
    pub container: String,
}

impl fmt::Debug for AzureSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureSettings")
            .field("account", &self.account)
            .field("blob_endpoint", &self.blob_endpoint)
            .field("container", &self.container)
            .field(
                "credential",
                match &self.credential {
                    AzureCredential::ConnectionString(_) => &"connection string <redacted>",
                    AzureCredential::ContainerSas(_) => &"container SAS <redacted>",
                },
            )
            .finish()
    }
}

impl AzureSettings {
    pub fn container_sas(&self) -> Option<&ContainerSas> {
        match &self.credential {
            AzureCredential::ContainerSas(sas) => Some(sas),
            AzureCredential::ConnectionString(_) => None,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The settings every subcommand shares: what the detector and recorder need, and logging.
#[derive(Debug, Clone)]
pub struct Settings {
    pub motion: MotionSettings,
    pub clips: ClipSettings,
    pub log_format: LogFormat,
}

/// Everything the service needs, validated.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub camera: CameraSettings,
    pub motion: MotionSettings,
    pub recorder: RecorderSettings,
    pub storage: StorageSettings,
    pub spool_dir: PathBuf,
    pub spool_limits: SpoolLimits,
    /// The longest wait between two tries of a failed upload.
    pub upload_retry_max: Duration,
    pub shutdown_grace: Duration,
    /// `dachavideo health` reports unhealthy when no camera frame arrived for this long.
    pub health_max_frame_age: Duration,
    /// Where `/healthz` and `/metrics` are served, if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where clip events are posted, if anywhere.
    pub webhook_url: Option<crate::webhook::WebhookUrl>,
    pub log_format: LogFormat,
}

/// Merges `.env` from the working directory into the process environment (set variables win) and reads the
/// raw values. Must run before any thread is started.
pub fn load_raw_env() -> Result<RawEnv, ConfigError> {
    match dotenvy::dotenv() {
        Ok(_) => {}
        Err(e) if e.not_found() => {}
        Err(e) => return Err(ConfigError::new(".env", format!("cannot be read: {e}"))),
    }
    RawEnv::from_process_env()
}

impl Settings {
    pub fn from_raw(raw: &RawEnv) -> Result<Self, ConfigError> {
        Ok(Self {
            motion: MotionSettings {
                min_area: parse_min_area(&raw.motion_min_area)?,
                mask: MotionMask::parse(non_empty(&raw.motion_mask).unwrap_or_default())
                    .map_err(|reason| ConfigError::new("MOTION_MASK", reason))?,
                min_frames: parse_min_motion_frames(&raw.min_motion_frames)?,
            },
            clips: parse_clip_settings(raw)?,
            log_format: parse_log_format(&raw.log_format)?,
        })
    }
}

impl ServiceConfig {
    pub fn from_raw(raw: &RawEnv) -> Result<Self, ConfigError> {
        let shared = Settings::from_raw(raw)?;
        let url = CameraUrl::parse(
            non_empty(&raw.rtsp_url).ok_or_else(|| ConfigError::new("RTSP_URL", "is required"))?,
        )?;
        let camera_name = match non_empty(&raw.camera_name) {
            Some(name) => parse_camera_name(name)?,
            None => sanitize_name(url.host()),
        };
        Ok(Self {
            camera: CameraSettings {
                open_timeout: parse_duration("CAMERA_OPEN_TIMEOUT", &raw.camera_open_timeout)?,
                read_timeout: parse_duration("CAMERA_READ_TIMEOUT", &raw.camera_read_timeout)?,
                reconnect_interval: parse_duration("RECONNECT_INTERVAL", &raw.reconnect_interval)?,
                url,
            },
            motion: shared.motion,
            recorder: RecorderSettings {
                camera_name,
                clips: shared.clips,
            },
            storage: parse_storage(raw)?,
            spool_dir: parse_dir("SPOOL_DIR", &raw.spool_dir)?,
            spool_limits: SpoolLimits {
                max_bytes: parse_bytes("SPOOL_MAX_BYTES", &raw.spool_max_bytes)?,
                min_free_bytes: parse_bytes("SPOOL_MIN_FREE", &raw.spool_min_free)?,
            },
            upload_retry_max: parse_duration("UPLOAD_RETRY_MAX", &raw.upload_retry_max)?,
            shutdown_grace: parse_duration("SHUTDOWN_GRACE", &raw.shutdown_grace)?,
            health_max_frame_age: parse_duration(
                "HEALTH_MAX_FRAME_AGE",
                &raw.health_max_frame_age,
            )?,
            metrics_addr: non_empty(&raw.metrics_addr)
                .map(parse_metrics_addr)
                .transpose()?,
            webhook_url: non_empty(&raw.event_webhook_url)
                .map(crate::webhook::WebhookUrl::parse)
                .transpose()?,
            log_format: shared.log_format,
        })
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn parse_duration(variable: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    let duration = humantime::parse_duration(raw.trim()).map_err(|e| {
        ConfigError::new(
            variable,
            format!("{raw:?} is not a duration ({e}); use e.g. 30s, 2m, 1h30m"),
        )
    })?;
    if duration.is_zero() {
        return Err(ConfigError::new(variable, "must be longer than zero"));
    }
    Ok(duration)
}

/// A duration that may be zero (`0s` turns the feature off).
fn parse_duration_or_zero(variable: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    match raw.trim() {
        "0" => Ok(Duration::ZERO),
        trimmed => humantime::parse_duration(trimmed).map_err(|e| {
            ConfigError::new(
                variable,
                format!("{raw:?} is not a duration ({e}); use e.g. 3s, 500ms, 0s for none"),
            )
        }),
    }
}

fn parse_clip_settings(raw: &RawEnv) -> Result<ClipSettings, ConfigError> {
    // Every variable is checked, also those the chosen mode does not use: a typo shows at once.
    let duration = parse_duration("RECORD_DURATION", &raw.record_duration)?;
    let post_roll = parse_duration_or_zero("POST_ROLL", &raw.post_roll)?;
    let max_clip = parse_duration("MAX_CLIP", &raw.max_clip)?;
    let policy = match raw.record_mode.trim().to_ascii_lowercase().as_str() {
        "fixed" => ClipPolicy::Fixed { duration },
        "motion" => {
            if max_clip <= post_roll {
                return Err(ConfigError::new(
                    "MAX_CLIP",
                    format!(
                        "{} must be longer than POST_ROLL ({})",
                        humantime::format_duration(max_clip),
                        humantime::format_duration(post_roll)
                    ),
                ));
            }
            ClipPolicy::FollowMotion {
                post_roll,
                max_clip,
            }
        }
        _ => {
            return Err(ConfigError::new(
                "RECORD_MODE",
                format!(
                    "{:?} is not one of: fixed (clips of RECORD_DURATION), motion (while motion lasts)",
                    raw.record_mode
                ),
            ));
        }
    };
    let pre_roll = parse_duration_or_zero("PRE_ROLL", &raw.pre_roll)?;
    if pre_roll > MAX_PRE_ROLL {
        return Err(ConfigError::new(
            "PRE_ROLL",
            format!(
                "{} is longer than the {} the pre-roll buffer allows",
                humantime::format_duration(pre_roll),
                humantime::format_duration(MAX_PRE_ROLL)
            ),
        ));
    }
    Ok(ClipSettings {
        policy,
        pre_roll,
        pre_roll_max_bytes: parse_bytes("PRE_ROLL_MAX_MEMORY", &raw.pre_roll_max_memory)?,
    })
}

/// The pre-roll is decoded again when a clip opens: past this, a Pi would spend many seconds on it.
const MAX_PRE_ROLL: Duration = Duration::from_secs(30);

fn parse_bytes(variable: &'static str, raw: &str) -> Result<u64, ConfigError> {
    raw.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| {
            ConfigError::new(
                variable,
                format!("{raw:?} is not a size; use e.g. 4GiB, 500MB, 1000000"),
            )
        })
}

fn parse_metrics_addr(raw: &str) -> Result<std::net::SocketAddr, ConfigError> {
    raw.parse().map_err(|_| {
        ConfigError::new(
            "METRICS_ADDR",
            format!(
                "{raw:?} is not an IP address and port; use e.g. 0.0.0.0:9090 or 127.0.0.1:9090"
            ),
        )
    })
}

fn parse_min_area(raw: &str) -> Result<f64, ConfigError> {
    const VAR: &str = "MOTION_MIN_AREA";
    let area: u32 = raw.trim().parse().map_err(|e| {
        ConfigError::new(
            VAR,
            format!("{raw:?} is not a whole number of pixels ({e})"),
        )
    })?;
    if area == 0 {
        return Err(ConfigError::new(VAR, "must be at least 1 pixel"));
    }
    Ok(f64::from(area))
}

fn parse_min_motion_frames(raw: &str) -> Result<u32, ConfigError> {
    const VAR: &str = "MIN_MOTION_FRAMES";
    match raw.trim().parse::<u32>() {
        Ok(frames @ 1..=100) => Ok(frames),
        _ => Err(ConfigError::new(
            VAR,
            format!("{raw:?} is not a whole number of frames from 1 to 100"),
        )),
    }
}

fn parse_log_format(raw: &str) -> Result<LogFormat, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(ConfigError::new(
            "LOG_FORMAT",
            format!("{raw:?} is not one of: text, json"),
        )),
    }
}

fn parse_dir(variable: &'static str, raw: &str) -> Result<PathBuf, ConfigError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ConfigError::new(variable, "must not be empty"));
    }
    if trimmed.contains('"') {
        return Err(ConfigError::new(
            variable,
            "must not contain a double quote",
        ));
    }
    Ok(PathBuf::from(trimmed))
}

/// A camera name is a blob path segment: letters, digits, `-`, `_`, `.`.
fn parse_camera_name(raw: &str) -> Result<String, ConfigError> {
    let valid = raw.len() <= 64
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !raw.starts_with('.');
    if valid {
        Ok(raw.to_string())
    } else {
        Err(ConfigError::new(
            "CAMERA_NAME",
            format!(
                "{raw:?} may hold only letters, digits, '-', '_' and '.' (at most 64, not starting with '.')"
            ),
        ))
    }
}

/// Turns a host name or address into a camera name.
fn sanitize_name(raw: &str) -> String {
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches(|c| c == '.' || c == '-').to_string();
    if name.is_empty() {
        "camera".to_string()
    } else {
        name
    }
}

pub fn parse_storage(raw: &RawEnv) -> Result<StorageSettings, ConfigError> {
    if let Some(sas_url) = non_empty(&raw.az_container_sas_url) {
        return parse_container_sas(raw, sas_url);
    }
    match (
        non_empty(&raw.az_storage_connstring),
        non_empty(&raw.az_container_name),
    ) {
        (None, None) => Ok(StorageSettings::LocalDir(parse_dir(
            "CLIPS_DIR",
            &raw.clips_dir,
        )?)),
        (Some(_), None) => Err(ConfigError::new(
            "AZ_CONTAINER_NAME",
            "is required when AZ_STORAGE_CONNSTRING is set",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            "AZ_STORAGE_CONNSTRING",
            "is required when AZ_CONTAINER_NAME is set",
        )),
        (Some(connection_string), Some(container)) => {
            let container = parse_container_name(container)?;
            let (account, blob_endpoint) = parse_connection_string(connection_string)?;
            Ok(StorageSettings::Azure(AzureSettings {
                credential: AzureCredential::ConnectionString(SecretString::from(
                    connection_string.to_string(),
                )),
                account,
                blob_endpoint,
                container,
            }))
        }
    }
}

/// `AZ_CONTAINER_SAS_URL`, which replaces both `AZ_STORAGE_CONNSTRING` and `AZ_CONTAINER_NAME`.
fn parse_container_sas(raw: &RawEnv, sas_url: &str) -> Result<StorageSettings, ConfigError> {
    let also_set: Vec<&str> = [
        ("AZ_STORAGE_CONNSTRING", &raw.az_storage_connstring),
        ("AZ_CONTAINER_NAME", &raw.az_container_name),
    ]
    .into_iter()
    .filter(|(_, value)| non_empty(value).is_some())
    .map(|(name, _)| name)
    .collect();
    if !also_set.is_empty() {
        return Err(ConfigError::new(
            "AZ_CONTAINER_SAS_URL",
            format!(
                "set either AZ_CONTAINER_SAS_URL or AZ_STORAGE_CONNSTRING with AZ_CONTAINER_NAME, not both \
                 (also set: {})",
                also_set.join(", ")
            ),
        ));
    }
    let sas = ContainerSas::parse(sas_url)?;
    Ok(StorageSettings::Azure(AzureSettings {
        account: sas.account.clone(),
        blob_endpoint: Some(sas.endpoint.clone()),
        container: sas.container.clone(),
        credential: AzureCredential::ContainerSas(sas),
    }))
}

/// Checks a connection string without ever echoing it (the azure crates' own errors include the whole
/// string, account key and all). Returns the account name and the blob endpoint, if one is given.
fn parse_connection_string(raw: &str) -> Result<(String, Option<String>), ConfigError> {
    const VAR: &str = "AZ_STORAGE_CONNSTRING";
    let parsed = azure_storage::ConnectionString::new(raw).map_err(|_| {
        ConfigError::new(
            VAR,
            "is not a connection string of Key=Value pairs separated by ';' \
             (copy it from the storage account's Access keys page)",
        )
    })?;
    let account = parsed
        .account_name
        .ok_or_else(|| ConfigError::new(VAR, "has no AccountName"))?;
    match (parsed.account_key, parsed.sas) {
        (Some(key), None) => {
            azure_core::base64::decode(key)
                .map_err(|_| ConfigError::new(VAR, "AccountKey is not valid base64"))?;
        }
        (_, Some(_)) => {}
        (None, None) => {
            return Err(ConfigError::new(
                VAR,
                "has neither AccountKey nor SharedAccessSignature",
            ));
        }
    }
    let blob_endpoint = match parsed.blob_endpoint {
        Some(endpoint) => {
            Url::parse(endpoint)
                .map_err(|e| ConfigError::new(VAR, format!("BlobEndpoint is not a URL ({e})")))?;
            Some(endpoint.trim_end_matches('/').to_string())
        }
        None => None,
    };
    Ok((account.to_string(), blob_endpoint))
}

/// Azure's container naming rules: 3-63 characters of lowercase letters, digits and single hyphens,
/// starting and ending with a letter or digit.
fn parse_container_name(raw: &str) -> Result<String, ConfigError> {
    if is_container_name(raw) {
        Ok(raw.to_string())
    } else {
        Err(ConfigError::new(
            "AZ_CONTAINER_NAME",
            format!(
                "{raw:?} is not a valid container name: 3-63 lowercase letters, digits and single hyphens, \
                 starting and ending with a letter or digit"
            ),
        ))
    }
}

fn is_container_name(raw: &str) -> bool {
    let valid_chars = raw
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    (3..=63).contains(&raw.len())
        && valid_chars
        && !raw.starts_with('-')
        && !raw.ends_with('-')
        && !raw.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn service(pairs: &[(&str, &str)]) -> Result<ServiceConfig, ConfigError> {
        ServiceConfig::from_raw(&RawEnv::from_map(&env(pairs))?)
    }

    fn azurite_connstring(key: &str) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};\
             BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/;"
        )
    }

    #[test]
    fn defaults_apply_and_camera_name_comes_from_the_host() {
        let config =
            service(&[("RTSP_URL", "rtsp://admin:hunter2@192.168.1.20:554/stream1")]).unwrap();
        assert_eq!(
            config.recorder.clips,
            ClipSettings {
                policy: ClipPolicy::Fixed {
                    duration: Duration::from_secs(30)
                },
                pre_roll: Duration::from_secs(3),
                pre_roll_max_bytes: 64 * 1024 * 1024,
            }
        );
        assert_eq!(config.camera.reconnect_interval, Duration::from_secs(10));
        assert_eq!(config.motion.min_area, 5000.0);
        assert_eq!(config.motion.min_frames, 3);
        assert_eq!(config.shutdown_grace, Duration::from_secs(20));
        assert_eq!(config.spool_limits.max_bytes, 4 << 30);
        assert_eq!(config.spool_limits.min_free_bytes, 256 << 20);
        assert_eq!(config.recorder.camera_name, "192.168.1.20");
        assert!(
            matches!(config.storage, StorageSettings::LocalDir(ref d) if d == &PathBuf::from("clips"))
        );
    }

    #[test]
    fn missing_rtsp_url_names_the_variable() {
        let error = service(&[]).unwrap_err();
        assert_eq!(error.to_string(), "RTSP_URL: is required");
        let error = service(&[("RTSP_URL", "  ")]).unwrap_err();
        assert_eq!(error.variable, "RTSP_URL");
    }

    #[test]
    fn malformed_url_is_rejected_without_echoing_the_password() {
        let error = service(&[("RTSP_URL", "http://admin:hunter2@cam/stream")]).unwrap_err();
        assert_eq!(error.variable, "RTSP_URL");
        assert!(!error.to_string().contains("hunter2"), "{error}");
        let error = service(&[("RTSP_URL", "admin:hunter2 at camera")]).unwrap_err();
        assert_eq!(error.variable, "RTSP_URL");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn bad_durations_and_numbers_name_their_variable() {
        let url = ("RTSP_URL", "rtsp://cam/s");
        for (variable, value) in [
            ("RECORD_DURATION", "30x"),
            ("RECONNECT_INTERVAL", "soon"),
            ("SHUTDOWN_GRACE", "0s"),
            ("CAMERA_READ_TIMEOUT", "-1s"),
            ("MOTION_MIN_AREA", "big"),
            ("LOG_FORMAT", "xml"),
            ("SPOOL_MAX_BYTES", "lots"),
            ("SPOOL_MIN_FREE", "-1MB"),
            ("RECORD_MODE", "always"),
            ("PRE_ROLL", "3 sekundy"),
            ("PRE_ROLL", "5m"),
            ("PRE_ROLL_MAX_MEMORY", "a lot"),
            ("POST_ROLL", "-5s"),
            ("MAX_CLIP", "0s"),
            ("MOTION_MASK", "0,0 1,0"),
            ("MIN_MOTION_FRAMES", "0"),
            ("METRICS_ADDR", "localhost:9090"),
            ("METRICS_ADDR", "0.0.0.0"),
            ("EVENT_WEBHOOK_URL", "hub.local/hook"),
        ] {
            let error = service(&[url, (variable, value)]).unwrap_err();
            assert_eq!(error.variable, variable, "{error}");
        }
    }

    #[test]
    fn record_mode_motion_follows_the_motion_and_zero_turns_pre_roll_off() {
        let url = ("RTSP_URL", "rtsp://cam/s");
        let config = service(&[
            url,
            ("RECORD_MODE", "Motion"),
            ("POST_ROLL", "0"),
            ("MAX_CLIP", "90s"),
            ("PRE_ROLL", "0s"),
        ])
        .unwrap();
        assert_eq!(
            config.recorder.clips.policy,
            ClipPolicy::FollowMotion {
                post_roll: Duration::ZERO,
                max_clip: Duration::from_secs(90)
            }
        );
        assert_eq!(config.recorder.clips.pre_roll, Duration::ZERO);
        let error = service(&[
            url,
            ("RECORD_MODE", "motion"),
            ("POST_ROLL", "1m"),
            ("MAX_CLIP", "30s"),
        ])
        .unwrap_err();
        assert_eq!(error.variable, "MAX_CLIP", "{error}");
    }

    #[test]
    fn azure_needs_both_variables() {
        let url = ("RTSP_URL", "rtsp://cam/s");
        let connstring = azurite_connstring(DEV_KEY);
        let error = service(&[url, ("AZ_STORAGE_CONNSTRING", &connstring)]).unwrap_err();
        assert_eq!(error.variable, "AZ_CONTAINER_NAME");
        let error = service(&[url, ("AZ_CONTAINER_NAME", "clips")]).unwrap_err();
        assert_eq!(error.variable, "AZ_STORAGE_CONNSTRING");
        let config = service(&[
            url,
            ("AZ_STORAGE_CONNSTRING", &connstring),
            ("AZ_CONTAINER_NAME", "dacha-clips"),
        ])
        .unwrap();
        let StorageSettings::Azure(azure) = config.storage else {
            panic!("expected Azure storage");
        };
        assert_eq!(azure.account, "devstoreaccount1");
        assert_eq!(
            azure.blob_endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        assert!(!format!("{azure:?}").contains(DEV_KEY));
    }

    #[test]
    fn a_container_sas_replaces_both_azure_variables_and_excludes_them() {
        let url = ("RTSP_URL", "rtsp://cam/s");
        let sas = "https://acct.blob.core.windows.net/dacha-clips?sp=cw&sr=c&sig=U0VDUkVU";
        let config = service(&[url, ("AZ_CONTAINER_SAS_URL", sas)]).unwrap();
        let StorageSettings::Azure(azure) = config.storage else {
            panic!("expected Azure storage");
        };
        assert_eq!(azure.container, "dacha-clips");
        assert!(azure.container_sas().is_some());
        assert!(!format!("{azure:?}").contains("U0VDUkVU"));
        let connstring = azurite_connstring(DEV_KEY);
        for extra in [
            ("AZ_STORAGE_CONNSTRING", connstring.as_str()),
            ("AZ_CONTAINER_NAME", "dacha-clips"),
        ] {
            let error = service(&[url, ("AZ_CONTAINER_SAS_URL", sas), extra]).unwrap_err();
            assert_eq!(error.variable, "AZ_CONTAINER_SAS_URL");
            assert!(error.to_string().contains(extra.0), "{error}");
            assert!(
                !error.to_string().contains("U0VDUkVU") && !error.to_string().contains(DEV_KEY)
            );
        }
    }

    #[test]
    fn container_names_follow_azure_rules() {
        for good in ["abc", "dacha-clips", "cam1", &"a".repeat(63)] {
            assert!(parse_container_name(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "Clips",
            "-clips",
            "clips-",
            "dacha--clips",
            "dacha_clips",
            &"a".repeat(64),
        ] {
            assert!(parse_container_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn connection_string_errors_never_echo_the_key() {
        for bad in [
            "AccountName=devstoreaccount1;AccountKey=".to_string(),
            format!("garbage{DEV_KEY}"),
            format!("AccountKey={DEV_KEY}"),
            "AccountName=a;AccountKey=not*base64!".to_string(),
        ] {
            let error = parse_connection_string(&bad).unwrap_err();
            assert_eq!(error.variable, "AZ_STORAGE_CONNSTRING");
            assert!(!error.to_string().contains(DEV_KEY), "{error}");
            assert!(!error.to_string().contains("not*base64"), "{error}");
        }
    }

    #[test]
    fn camera_url_display_redacts_the_password() {
        let url = CameraUrl::parse("rtsp://admin:hunter2@cam:554/stream1").unwrap();
        assert_eq!(url.to_string(), "rtsp://admin:***@cam:554/stream1");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(url.expose().contains("hunter2"));
    }

    #[test]
    fn camera_names_are_checked_and_hosts_sanitized() {
        assert!(parse_camera_name("gate_cam-1").is_ok());
        assert!(parse_camera_name("gate/cam").is_err());
        assert_eq!(sanitize_name("[::1]"), "1");
        assert_eq!(sanitize_name("cam.local"), "cam.local");
    }
}
