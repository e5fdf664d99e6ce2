//! The `switchyard` binary: parses the command line, sets up logging and calls the library.

use std::process::ExitCode;

use clap::Parser;
use switchyard::Config;
use switchyard::cli::{Cli, Command, EmulateCommand};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` reads its settings first: they say how to log.
    let config = match &cli.command {
        Command::Serve(args) => match resolve(args) {
            Ok(config) => Some(config),
            Err(code) => return code,
        },
        _ => None,
    };
    let json = config.as_ref().is_some_and(|c| c.log_format == "json");
    init_tracing(json);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(_) => match config {
                Some(config) => serve(config).await,
                None => unreachable!("serve's configuration is resolved above"),
            },
            Command::Admin(args) => match switchyard::cli::admin(args).await {
                Ok(out) => {
                    println!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            },
            Command::Emulate(EmulateCommand::Device(args)) => {
                switchyard::emulate::device(args).await.map_or_else(fail, |()| ExitCode::SUCCESS)
            }
            Command::Emulate(EmulateCommand::App(args)) => {
                switchyard::emulate::app(args).await.map_or_else(fail, |code| ExitCode::from(code as u8))
            }
        }
    })
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}

/// Logs to stderr as text (coloured on a terminal) or as one JSON object per line, carrying the
/// fields of the spans it happened in (a session's `peer`, `session`, `deviceid` or `apikey`).
/// `RUST_LOG` filters either way.
fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(true).with_span_list(true).init();
    } else {
        builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
}

/// The node's configuration, or the exit code after printing every problem.
fn resolve(args: &switchyard::cli::ServeArgs) -> Result<Config, ExitCode> {
    let mut errors = Vec::new();
    let settings = args.settings(&mut errors);
    match Config::resolve(&settings) {
        Ok(c) if errors.is_empty() => Ok(c),
        Ok(_) => {
            eprintln!("error: invalid configuration:\n  {}", errors.join("\n  "));
            Err(ExitCode::from(2))
        }
        Err(e) => {
            errors.extend(e.0);
            eprintln!("error: invalid configuration:\n  {}", errors.join("\n  "));
            Err(ExitCode::from(2))
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    let shutdown = CancellationToken::new();
    let running = match switchyard::start(config, shutdown.clone()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    running.finished().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
