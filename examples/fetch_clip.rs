//! Downloads one clip from the configured Azure container: `cargo run --example fetch_clip -- <blob> <file>`.
//! Reads AZ_STORAGE_CONNSTRING and AZ_CONTAINER_NAME like the service. The demo uses it to show the
//! uploaded clip; it is also a starting point for fetching footage with a script.

use anyhow::{Context, bail};
use dachavideo::config::{RawEnv, StorageSettings};
use dachavideo::upload::AzureSink;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [blob, file] = args.as_slice() else {
        bail!("usage: fetch_clip <blob name> <output file>");
    };
    let raw = RawEnv::from_process_env()?;
    let storage = dachavideo::config::parse_storage(&raw)?;
    let StorageSettings::Azure(azure) = storage else {
        bail!("AZ_STORAGE_CONNSTRING and AZ_CONTAINER_NAME must be set");
    };
    let sink = AzureSink::new(&azure)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bytes = runtime
        .block_on(
            sink.container_client()
                .blob_client(blob.as_str())
                .get_content(),
        )
        .map_err(|_| anyhow::anyhow!("downloading {blob} failed"))?;
    std::fs::write(file, &bytes).with_context(|| format!("writing {file}"))?;
    println!("{file}: {} bytes", bytes.len());
    Ok(())
}
