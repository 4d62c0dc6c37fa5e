//! A sink that puts clips into an Azure Blob Storage container (`azure_storage_blobs`).
//!
//! Clips go up in 4 MiB blocks, each checked against the MD5 the service reports for what it received,
//! then one block list that commits the blob with its content type, Content-MD5 and the clip's metadata
//! (camera, start, seconds, frames, boxes), so a retried upload simply replaces the same blob. With a
//! connection string the container is created when missing; with a container SAS (`AZ_CONTAINER_SAS_URL`,
//! `sp=cw`) it is not (a SAS cannot), and nothing is ever read back. Every request has a timeout (the SDK has
//! none), and error messages never carry the account key or a SAS signature.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use azure_core::StatusCode;
use azure_core::request_options::Metadata;
use azure_storage::{CloudLocation, StorageCredentials};
use azure_storage_blobs::prelude::*;
use md5::{Digest, Md5};
use tokio::io::AsyncReadExt;

use super::{ClipSink, UploadError};
use crate::config::{AzureCredential, AzureSettings};
use crate::spool::{Attachment, ClipMeta, SpooledClip, base64_md5};

const BLOCK_SIZE: usize = 4 * 1024 * 1024;
/// Longest any single request may take (a 4 MiB block on a slow uplink included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Where `check` writes its test block under a container SAS. The block is never committed: no blob
/// appears, nothing is overwritten, and Azure discards uncommitted blocks after a week.
const PROBE_BLOB: &str = ".dachavideo-check";

pub struct AzureSink {
    container: ContainerClient,
    description: String,
    /// `https://acct.blob.core.windows.net/container`: no query, no credentials.
    container_url: String,
    container_ready: AtomicBool,
    /// Uploading with a container SAS: the container must exist already, and reads are not allowed.
    with_sas: bool,
}

impl AzureSink {
    pub fn new(settings: &AzureSettings) -> Result<Self, UploadError> {
        // Validated at start-up; the azure crate's own errors would echo the key or the signature, so they
        // are not shown.
        let credentials = match &settings.credential {
            AzureCredential::ConnectionString(connection_string) => {
                azure_storage::ConnectionString::new(secrecy::ExposeSecret::expose_secret(
                    connection_string,
                ))
                .map_err(|_| UploadError::Permanent("AZ_STORAGE_CONNSTRING is malformed".into()))?
                .storage_credentials()
                .map_err(|_| {
                    UploadError::Permanent("AZ_STORAGE_CONNSTRING has no usable credentials".into())
                })?
            }
            AzureCredential::ContainerSas(sas) => StorageCredentials::sas_token(sas.expose_query())
                .map_err(|_| {
                    UploadError::Permanent("AZ_CONTAINER_SAS_URL holds no usable SAS".into())
                })?,
        };
        let with_sas = settings.container_sas().is_some();
        let builder = match &settings.blob_endpoint {
            Some(uri) => ClientBuilder::with_location(
                CloudLocation::Custom {
                    account: settings.account.clone(),
                    uri: uri.clone(),
                },
                credentials,
            ),
            None => ClientBuilder::new(settings.account.clone(), credentials),
        };
        let endpoint = settings
            .blob_endpoint
            .clone()
            .unwrap_or_else(|| format!("https://{}.blob.core.windows.net", settings.account));
        Ok(Self {
            container: builder
                .retry(azure_core::RetryOptions::none())
                .container_client(settings.container.clone()),
            container_url: format!("{endpoint}/{}", settings.container),
            description: format!(
                "azure container {} at {endpoint}{}",
                settings.container,
                if with_sas { " (container SAS)" } else { "" }
            ),
            container_ready: AtomicBool::new(false),
            with_sas,
        })
    }

    /// The container's client, for tools that read clips back.
    pub fn container_client(&self) -> &ContainerClient {
        &self.container
    }

    /// Creates the container unless it exists; returns whether it was created. Never with a container SAS:
    /// it cannot create containers, and the container must exist already.
    async fn ensure_container(&self) -> Result<bool, UploadError> {
        if self.with_sas || self.container_ready.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let created = match timed(self.container.create().into_future()).await {
            Ok(_) => true,
            Err(e) if status_of(&e) == Some(StatusCode::Conflict) => false,
            Err(e) => return Err(self.classify(&e, "creating the container")),
        };
        self.container_ready.store(true, Ordering::Relaxed);
        Ok(created)
    }
}

impl ClipSink for AzureSink {
    async fn upload(&self, clip: &SpooledClip, meta: &ClipMeta) -> Result<(), UploadError> {
        self.ensure_container().await?;
        let blob = self.container.blob_client(clip.blob_name.clone());
        let mut file = tokio::fs::File::open(&clip.path).await?;
        let mut whole_file = Md5::new();
        let mut blocks = BlockList::default();
        for index in 0_u32.. {
            let mut chunk = Vec::with_capacity(BLOCK_SIZE);
            (&mut file)
                .take(BLOCK_SIZE as u64)
                .read_to_end(&mut chunk)
                .await?;
            if chunk.is_empty() && index > 0 {
                break;
            }
            whole_file.update(&chunk);
            let sent: [u8; 16] = Md5::digest(&chunk).into();
            let id = BlockId::new(format!("block-{index:06}"));
            let response = timed(blob.put_block(id.clone(), chunk).into_future())
                .await
                .map_err(|e| self.failed(&e, "uploading a block"))?;
            // The service reports the MD5 of what it received: a mismatch is corruption on the way.
            if response
                .content_md5
                .is_some_and(|received| received.as_slice() != &sent)
            {
                return Err(UploadError::Transient(format!(
                    "block {index} arrived corrupted (MD5 mismatch)"
                )));
            }
            blocks.blocks.push(BlobBlockType::Uncommitted(id));
        }
        let digest: [u8; 16] = whole_file.finalize().into();
        if base64_md5(&digest) != meta.md5 {
            tracing::error!(
                clip = %clip.blob_name,
                "the clip's bytes changed on disk since it was recorded (failing SD card?); uploading it as it is"
            );
        }
        let mut metadata = Metadata::new();
        for (key, value) in meta.as_blob_metadata() {
            metadata.insert(key, value);
        }
        timed(
            blob.put_block_list(blocks)
                .content_type("video/mp4")
                .content_md5(BlobContentMD5(digest))
                .metadata(metadata)
                .into_future(),
        )
        .await
        .map_err(|e| self.failed(&e, "committing the blob"))?;
        Ok(())
    }

    async fn upload_attachment(
        &self,
        blob_name: &str,
        kind: Attachment,
        bytes: Vec<u8>,
    ) -> Result<(), UploadError> {
        self.ensure_container().await?;
        let digest: [u8; 16] = Md5::digest(&bytes).into();
        let blob = self.container.blob_client(blob_name.to_string());
        timed(
            blob.put_block_blob(bytes)
                .content_type(kind.content_type())
                .hash(Hash::MD5(digest))
                .into_future(),
        )
        .await
        .map_err(|e| self.failed(&e, "uploading an attachment"))?;
        Ok(())
    }

    async fn probe(&self) -> Result<String, UploadError> {
        if self.with_sas {
            // A SAS with sp=cw can neither read the container nor delete a test blob: the harmless write
            // is an uncommitted block, the same request an upload starts with.
            let probe = self.container.blob_client(PROBE_BLOB);
            timed(
                probe
                    .put_block(BlockId::new("dachavideo-check"), b"check".to_vec())
                    .into_future(),
            )
            .await
            .map_err(|e| self.classify(&e, "writing a test block"))?;
            return Ok(format!(
                "{}: a test block was accepted (nothing committed)",
                self.description
            ));
        }
        self.container_ready.store(false, Ordering::Relaxed);
        let created = self.ensure_container().await?;
        timed(self.container.get_properties().into_future())
            .await
            .map_err(|e| self.classify(&e, "reading the container"))?;
        let state = if created { "created" } else { "exists" };
        Ok(format!(
            "{} ({state}, credentials accepted)",
            self.description
        ))
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn location(&self, blob_name: &str) -> String {
        format!("{}/{blob_name}", self.container_url)
    }
}

impl AzureSink {
    fn failed(&self, error: &azure_core::Error, doing: &str) -> UploadError {
        if status_of(error) == Some(StatusCode::NotFound) {
            // The container may have been deleted: create it again on the next try.
            self.container_ready.store(false, Ordering::Relaxed);
        }
        self.classify(error, doing)
    }

    fn classify(&self, error: &azure_core::Error, doing: &str) -> UploadError {
        if self.with_sas {
            classify(
                error,
                doing,
                "check AZ_CONTAINER_SAS_URL: its signature, permissions (sp=cw) and expiry (se)",
                "the container does not exist, and a SAS cannot create it: create it in the storage account",
            )
        } else {
            classify(
                error,
                doing,
                "check the account key or SAS in AZ_STORAGE_CONNSTRING",
                "",
            )
        }
    }
}

/// Runs a request with [`REQUEST_TIMEOUT`].
async fn timed<T>(request: impl Future<Output = azure_core::Result<T>>) -> azure_core::Result<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .unwrap_or_else(|_| {
            Err(azure_core::Error::message(
                azure_core::error::ErrorKind::Io,
                "request timed out",
            ))
        })
}

fn status_of(error: &azure_core::Error) -> Option<StatusCode> {
    match error.kind() {
        azure_core::error::ErrorKind::HttpResponse { status, .. } => Some(*status),
        _ => None,
    }
}

/// An upload error with a message fit for a log line: status and Azure's error code, never a URL
/// (which may carry a SAS signature) nor the response body. `refused` says what to check on 401/403;
/// `missing`, when not empty, makes a 404 permanent with that explanation.
fn classify(error: &azure_core::Error, doing: &str, refused: &str, missing: &str) -> UploadError {
    match error.kind() {
        azure_core::error::ErrorKind::HttpResponse { status, error_code } => {
            let code = error_code.as_deref().unwrap_or("no error code");
            let status_number = *status as u16;
            match status {
                StatusCode::Forbidden | StatusCode::Unauthorized => {
                    UploadError::Permanent(format!(
                        "{doing}: storage refused the credentials ({status_number} {code}): {refused}"
                    ))
                }
                StatusCode::NotFound if !missing.is_empty() => {
                    UploadError::Permanent(format!("{doing}: {missing} ({status_number} {code})"))
                }
                StatusCode::BadRequest => UploadError::Permanent(format!(
                    "{doing}: storage rejected the request ({status_number} {code}): check AZ_CONTAINER_NAME"
                )),
                _ => UploadError::Transient(format!(
                    "{doing}: storage answered {status_number} {code}"
                )),
            }
        }
        azure_core::error::ErrorKind::Io => UploadError::Transient(format!(
            "{doing}: storage unreachable ({})",
            io_reason(error)
        )),
        other => UploadError::Transient(format!("{doing}: {other:?} error")),
    }
}

/// The innermost cause of a network error, with any URL query (SAS signature) cut off.
fn io_reason(error: &azure_core::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(inner) = source.source() {
        source = inner;
    }
    crate::telemetry::redact_queries(&source.to_string())
}
