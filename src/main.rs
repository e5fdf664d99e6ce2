//! The `switchyard` binary: parses the command line, sets up logging and calls the library.

use std::process::ExitCode;

use clap::Parser;
use switchyard::Config;
use switchyard::cli::{Cli, Command, EmulateCommand};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
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

async fn serve(args: switchyard::cli::ServeArgs) -> ExitCode {
    let mut errors = Vec::new();
    let settings = args.settings(&mut errors);
    let config = match Config::resolve(&settings) {
        Ok(c) if errors.is_empty() => c,
        Ok(_) => {
            eprintln!("error: invalid configuration:\n  {}", errors.join("\n  "));
            return ExitCode::from(2);
        }
        Err(e) => {
            errors.extend(e.0);
            eprintln!("error: invalid configuration:\n  {}", errors.join("\n  "));
            return ExitCode::from(2);
        }
    };
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
