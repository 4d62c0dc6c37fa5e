//! Command-line interface: subcommands and their exit statuses.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Parser, Subcommand};
use dachavideo::config::{self, ConfigError, LogFormat, ServiceConfig, Settings, StorageSettings};
use dachavideo::shutdown::Shutdown;
use dachavideo::upload::ConfiguredSink;
use dachavideo::{bench, check, detect, health, metrics, pipeline, telemetry};
use tracing::{error, info, warn};

const EXIT_FAILURE: u8 = 1;
const EXIT_CONFIG: u8 = 2;
/// `dachavideo health` over HTTP: well under the container health check's own timeout (10 s).
const HEALTH_HTTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Motion-triggered recorder for an RTSP camera: records clips with the moving regions boxed and
/// uploads them to Azure Blob Storage (or a local directory).
///
/// Configured by environment variables (and ./.env when present); see the README for the list.
#[derive(Parser)]
#[command(version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default): watch the camera, record on motion, upload; stop on SIGTERM/SIGINT.
    Run,
    /// Validate the configuration, try the camera and the storage once, print a report.
    Check,
    /// Exit 0 if the running service is healthy (a camera frame within HEALTH_MAX_FRAME_AGE), else 1.
    /// Asks the service's GET /healthz when METRICS_ADDR is set, else reads its status file in the spool.
    Health,
    /// Measure one part of the pipeline on a video file (decode, detect, record); print a JSON line.
    /// `scripts/bench.sh` runs them side by side.
    Bench {
        #[arg(value_enum)]
        mode: bench::BenchMode,
        video: PathBuf,
    },
    /// Run the detector and recorder over a video file; print one JSON line per clip.
    Detect {
        /// The video file to scan.
        video: PathBuf,
        /// Where to write the clips.
        #[arg(long, default_value = "clips")]
        out: PathBuf,
    },
}

pub fn main(cli: Cli) -> ExitCode {
    let raw = match config::load_raw_env() {
        Ok(raw) => raw,
        Err(e) => return config_error(&e),
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => match ServiceConfig::from_raw(&raw) {
            Ok(config) => run_service(config),
            Err(e) => config_error(&e),
        },
        Command::Check => match ServiceConfig::from_raw(&raw) {
            Ok(config) => run_check(config),
            Err(e) => config_error(&e),
        },
        Command::Health => match ServiceConfig::from_raw(&raw) {
            Ok(config) => run_health(&config),
            Err(e) => config_error(&e),
        },
        Command::Bench { mode, video } => match Settings::from_raw(&raw) {
            Ok(settings) => run_bench(mode, &video, settings),
            Err(e) => config_error(&e),
        },
        Command::Detect { video, out } => match Settings::from_raw(&raw) {
            Ok(settings) => run_detect(settings, &video, &out),
            Err(e) => config_error(&e),
        },
    }
}

fn config_error(error: &ConfigError) -> ExitCode {
    eprintln!("dachavideo: configuration error: {error}");
    ExitCode::from(EXIT_CONFIG)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

fn run_service(config: ServiceConfig) -> ExitCode {
    telemetry::init(config.log_format);
    if let StorageSettings::LocalDir(dir) = &config.storage {
        info!(dir = %dir.display(), "AZ_STORAGE_CONNSTRING and AZ_CONTAINER_NAME are not set: clips go to a local directory");
    }
    warn_of_sas_expiry(&config.storage);
    let result = (|| -> anyhow::Result<()> {
        let sink = ConfiguredSink::from_settings(&config.storage)?;
        let shutdown = Shutdown::new();
        shutdown.listen_for_signals()?;
        runtime()?.block_on(pipeline::run(config, sink, shutdown))
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "dachavideo stopped");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// A container SAS that has expired or will within a week: say so at start, when someone reads the log.
fn warn_of_sas_expiry(storage: &StorageSettings) {
    let StorageSettings::Azure(azure) = storage else {
        return;
    };
    let Some(expiry) = azure.container_sas().and_then(|sas| sas.expiry) else {
        return;
    };
    let left = expiry - time::OffsetDateTime::now_utc();
    if !left.is_positive() {
        warn!("AZ_CONTAINER_SAS_URL has expired: uploads will be refused until it is replaced");
    } else if left < time::Duration::days(7) {
        warn!(expires_in = %check::human(left), "AZ_CONTAINER_SAS_URL expires soon: make a new one");
    }
}

fn run_check(config: ServiceConfig) -> ExitCode {
    println!(
        "config   ok    camera {:?}, clips {}, spool {}",
        config.recorder.camera_name,
        config.recorder.clips.summary(),
        config.spool_dir.display()
    );
    let mut lines = vec![check::check_camera(&config)];
    if let StorageSettings::Azure(azure) = &config.storage
        && let Some(sas) = azure.container_sas()
    {
        lines.push(check::check_sas(sas, time::OffsetDateTime::now_utc()));
    }
    let storage = match (ConfiguredSink::from_settings(&config.storage), runtime()) {
        (Ok(sink), Ok(runtime)) => runtime.block_on(check::check_storage(&sink)),
        (Err(e), _) => check::CheckLine {
            what: "storage",
            outcome: check::Outcome::Fail(e.to_string()),
        },
        (_, Err(e)) => check::CheckLine {
            what: "storage",
            outcome: check::Outcome::Fail(e.to_string()),
        },
    };
    lines.push(storage);
    let mut failed = false;
    for line in &lines {
        match &line.outcome {
            check::Outcome::Ok(detail) => println!("{:<8} ok    {detail}", line.what),
            check::Outcome::Warn(detail) => println!("{:<8} WARN  {detail}", line.what),
            check::Outcome::Fail(reason) => {
                failed = true;
                println!("{:<8} FAIL  {reason}", line.what);
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

fn run_health(config: &ServiceConfig) -> ExitCode {
    // With METRICS_ADDR the running service judges itself (GET /healthz); else its status file is read.
    let judged = match config.metrics_addr {
        Some(addr) => metrics::http::ask_health(addr, HEALTH_HTTP_TIMEOUT),
        None => health::assess(
            &config.spool_dir,
            SystemTime::now(),
            config.health_max_frame_age,
        ),
    };
    match judged {
        Ok(summary) => {
            println!("healthy: {summary}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("unhealthy: {reason}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run_bench(mode: bench::BenchMode, video: &std::path::Path, settings: Settings) -> ExitCode {
    telemetry::init_stderr(LogFormat::Text);
    match bench::run(mode, video, settings.motion) {
        Ok(report) => {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dachavideo: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run_detect(settings: Settings, video: &std::path::Path, out: &std::path::Path) -> ExitCode {
    // Logs to stderr here: stdout carries the JSON lines.
    telemetry::init_stderr(LogFormat::Text);
    let printed = detect::detect_file(video, out, settings.motion, settings.clips, |clip| {
        match serde_json::to_string(&clip) {
            Ok(line) => println!("{line}"),
            Err(e) => error!(error = %e, "cannot print a clip"),
        }
    });
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dachavideo: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
