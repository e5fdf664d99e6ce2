//! `loadtest`: the load generator for Switchyard. It opens many device and app connections to a
//! hub over WS or WSS, speaks the real protocol, runs named scenarios and reports latency (HDR
//! histograms), errors, and the hub's CPU per message and memory per connection read from /proc.
//! `compare` runs the same workload shapes against Mosquitto and a bare echo server; `smoke` runs
//! everything tiny for CI. Every run is bounded in count and time, and talks to loopback only.
//!
//! Modules: [`client`] (connections and the three wire languages), [`mqtt`] (MQTT 3.1.1 codec),
//! [`hub`] (start/attach/seed the hub, or start a cluster), [`peers`] (the servers behind one `Env`), [`procstat`]
//! (/proc figures), [`scenarios`], [`compare`], [`smoke`], [`echo`], [`report`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod client;
mod compare;
mod echo;
mod hub;
mod mqtt;
mod peers;
mod procstat;
mod report;
mod scenarios;
mod smoke;

use peers::{Env, Peer};
use scenarios::{RunArgs, Scenario};

const SCENARIOS: &str = "\
Scenarios (loadtest run SCENARIO):
  conn-idle      N device connections opened at --rate/s and held with heartbeats for --duration s:
                 hub memory per connection, connect latency and rate, hub CPU while idle.
  conn-tls       conn-idle over WSS: the cost of TLS handshakes and of TLS sessions.
  conn-storm     N devices connected, then every connection dropped and reconnected at once:
                 time to full recovery, accept/handshake errors, replaced connections.
  route-rr       one app, one device, one update in flight: round-trip latency and CPU per update.
  route-p2p      N apps driving N devices (update + ack) at stepped total rates: the highest rate
                 with p99 < 10 ms, and hub CPU per update+ack.
  route-timeout  devices that never ack: every update must get 504 at the ack deadline; reports
                 how late the 504s come and whether pending-request memory stays flat.
  fanout         one device's reports delivered to N sessions of its owner and sharees: delivery
                 latency and hub CPU per delivery.
  slow-consumer  fanout while one session stops reading: hub memory must stay bounded (it closes
                 the slow session) and the other sessions must not suffer.
  report         N devices report state (with a sequence) at --rate in total: the time to each
                 report's answer (given once stored), hub CPU per report, reports per commit.
  soak           N connections (default 19,000: an app per 16 devices) for --duration (30 min),
                 --active-pct of them active per second (commands and reports, default 1%),
                 --churn-pct of the devices reconnecting per minute (default 1%): every
                 --interval-secs (60) the hub's RSS, open fds, round-trip p50/p99 and errors; at
                 the end RSS drift (last vs first steady interval) and whether p99 stayed flat.

The hub is started here from --hub-bin (default: the switchyard binary next to this one) with a
temporary data dir, free loopback ports and a generated certificate, seeded through its store,
and killed at the end; or give --hub-url, --hub-pid and --data-dir to use a running hub.
--cluster-nodes N starts N cluster nodes instead (`serve --cluster`, NATS at --nats-url) on a
fresh PostgreSQL database made on --pg-url's server and dropped at the end: apps connect to node 0,
devices to node 1, so every command and ack crosses NATS (N = 1: both on the one node); conn-idle and
conn-tls spread their connections over every node instead (one worker process per node or more);
server CPU and memory are summed over the nodes, the NATS server's (found by `pidof nats-server`) is reported apart.
Figures are printed as a table; --json FILE writes them. Each report says whether other
processes were using the CPU meanwhile (this machine has 2 cores shared by hub and generator).";

#[derive(Parser, Debug)]
#[command(name = "loadtest", version, about = "Load generator for the Switchyard hub", after_help = SCENARIOS)]
struct Cli {
    /// Never draw progress bars (they are drawn only on a terminal anyway)
    #[arg(long, global = true)]
    no_progress: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run one scenario against a hub (or, with --peer, against Mosquitto or the echo server)
    Run {
        #[arg(value_enum)]
        scenario: Scenario,
        /// Write the report as JSON
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Which server to load
        #[arg(long, value_enum, default_value = "switchyard")]
        peer: Peer,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Run route-rr, route-p2p, fanout and conn-idle against Switchyard, Mosquitto and the echo
    /// server, and print the figures side by side with ratios
    Compare(compare::CompareArgs),
    /// Every scenario at tiny sizes against a (debug) hub, plus a tiny compare: for CI; exits
    /// non-zero only on protocol failures
    Smoke(smoke::SmokeArgs),
    /// A WebSocket echo server (the floor of this machine); prints `listening on ADDR`
    EchoServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
    /// Internal: one generator process of a large conn-idle run
    #[command(hide = true)]
    Worker(scenarios::conn::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Raise the soft open-files limit to the hard one; a hub started here inherits it.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: cannot raise the open-files limit: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    switchyard::tls::install_provider();
    let progress = !cli.no_progress;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run { scenario, json, peer, args } => {
                let mut env = Env::start(peer, &args.hub, progress).await?;
                let r = scenarios::run(&mut env, scenario, &args).await;
                env.stop().await;
                let r = r?;
                r.print();
                if let Some(path) = json {
                    report::write_json(&path, &r.json())?;
                }
                Ok(r.failures.is_empty())
            }
            Command::Compare(args) => {
                let profile = if args.quick { compare::Profile::Quick } else { compare::Profile::Full };
                let reports = compare::compare(&args, profile, progress).await?;
                Ok(reports.iter().all(|r| r.failures.is_empty()))
            }
            Command::Smoke(args) => smoke::smoke(&args, progress).await,
            Command::EchoServer { listen } => echo::serve(listen).await.map(|()| true),
            Command::Worker(args) => scenarios::conn::worker(args).await.map(|()| true),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
