//! `loadtest compare`: the same workload shapes (route-rr, route-p2p, fanout, conn-idle) against
//! Switchyard, Mosquitto (our own instance; MQTT over WebSockets, driven by the same client code)
//! and the echo server (the floor of this machine), each on a fresh server process, printed side
//! by side with Switchyard's ratio to each. Mosquitto is skipped with a note when it is missing.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use crate::hub::{History, HubOpts};
use crate::peers::{Env, Peer, mosquitto_bin};
use crate::report::{Figure, Report, compare_table, write_json};
use crate::scenarios::{self, RunArgs, Scenario};

#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Smaller sizes and shorter phases (about a minute in all)
    #[arg(long)]
    pub quick: bool,
    /// Write every report and the side-by-side table as JSON
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Which peers, in order (the first is the one the ratios are taken of)
    #[arg(long, value_delimiter = ',', default_value = "switchyard,mosquitto,echo")]
    pub peers: Vec<Peer>,
    /// Also run Switchyard with the seeded devices' history off (a column of its own, right after
    /// Switchyard's), so what recording costs is measured in the same run
    #[arg(long)]
    pub history_both: bool,
    /// conn-idle: connections per peer
    #[arg(long)]
    pub n: Option<usize>,
    #[command(flatten)]
    pub hub: HubOpts,
}

/// Sizes of the compared workloads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Full,
    Quick,
    Tiny,
}

pub const FIGURES: &[Figure] = &[
    Figure { workload: "route-rr", key: "rtt.p50", label: "round trip p50", unit: "ms" },
    Figure { workload: "route-rr", key: "rtt.p99", label: "round trip p99", unit: "ms" },
    Figure { workload: "route-rr", key: "rate", label: "round trips/s", unit: "/s" },
    Figure { workload: "route-rr", key: "cpu_us_per_update", label: "server CPU/round trip", unit: "µs" },
    Figure { workload: "route-p2p", key: "max_rate", label: "max rate, p99<10ms", unit: "/s" },
    Figure { workload: "route-p2p", key: "first_step.cpu_us_per_update", label: "CPU/update, 1st step", unit: "µs" },
    Figure { workload: "route-p2p", key: "first_step.p99", label: "p99, 1st step", unit: "ms" },
    Figure { workload: "route-p2p", key: "cpu_us_per_update", label: "CPU/update at max", unit: "µs" },
    Figure { workload: "fanout", key: "delivery.p50", label: "delivery p50", unit: "ms" },
    Figure { workload: "fanout", key: "delivery.p99", label: "delivery p99", unit: "ms" },
    Figure { workload: "fanout", key: "cpu_us_per_delivery", label: "server CPU/delivery", unit: "µs" },
    Figure { workload: "conn-idle", key: "bytes_per_conn", label: "memory/connection", unit: "B" },
    Figure { workload: "conn-idle", key: "connect.p99", label: "connect+login p99", unit: "ms" },
    Figure { workload: "conn-idle", key: "open.cpu_us_per_conn", label: "server CPU/connection", unit: "µs" },
    Figure { workload: "conn-idle", key: "hold.server_cores", label: "server CPU while idle", unit: "cores" },
];

fn workload_args(scenario: Scenario, profile: Profile, n: Option<usize>, hub: &HubOpts) -> RunArgs {
    let mut a = RunArgs { hub: hub.clone(), ..Default::default() };
    let (full, quick) = (profile == Profile::Full, profile == Profile::Quick);
    match scenario {
        Scenario::RouteRr => {
            a.duration = Some(if full {
                10.0
            } else if quick {
                3.0
            } else {
                1.0
            })
        }
        Scenario::RoutePp => {
            a.n = Some(if full {
                50
            } else if quick {
                20
            } else {
                4
            });
            a.steps = if full {
                vec![1000.0, 2000.0, 4000.0, 8000.0, 16000.0, 32000.0]
            } else if quick {
                vec![1000.0, 2000.0, 4000.0, 8000.0]
            } else {
                vec![200.0]
            };
            a.step_secs = Some(if full {
                5.0
            } else if quick {
                2.0
            } else {
                1.0
            });
        }
        Scenario::Fanout => {
            a.n = Some(if full {
                200
            } else if quick {
                50
            } else {
                10
            });
            a.rate = Some(if full {
                200.0
            } else if quick {
                100.0
            } else {
                50.0
            });
            a.duration = Some(if full {
                10.0
            } else if quick {
                3.0
            } else {
                1.0
            });
        }
        _ => {
            a.n = Some(n.unwrap_or(if full {
                5000
            } else if quick {
                1000
            } else {
                50
            }));
            a.rate = Some(if profile == Profile::Tiny { 0.0 } else { 2000.0 });
            a.duration = Some(if full {
                10.0
            } else if quick {
                3.0
            } else {
                1.0
            });
            a.hb_secs = Some(if profile == Profile::Tiny { 0.5 } else { 5.0 });
        }
    }
    a.concurrency = 256;
    a
}

/// Runs the comparison; returns the reports (for exit status) after printing and writing them.
pub async fn compare(args: &CompareArgs, profile: Profile, progress: bool) -> Result<Vec<Report>> {
    let mut per_peer: Vec<(&str, Vec<Report>)> = Vec::new();
    let mut all = Vec::new();
    let mut notes = Vec::new();
    // (peer, history of the seeded devices, column name)
    let mut runs: Vec<(Peer, History, String)> = Vec::new();
    for &peer in &args.peers {
        runs.push((peer, args.hub.history, peer.name().to_owned()));
        if peer == Peer::Switchyard && args.history_both {
            let other = if args.hub.history == History::On { History::Off } else { History::On };
            runs.push((peer, other, format!("switchyard, history {}", if other == History::On { "on" } else { "off" })));
        }
    }
    for (peer, history, label) in &runs {
        let (peer, label) = (*peer, label.as_str());
        let hub_opts = HubOpts { history: *history, ..args.hub.clone() };
        if peer == Peer::Mosquitto && mosquitto_bin().is_none() {
            let note = "mosquitto is not installed: skipped (loadtest/install-peers.sh installs it)".to_owned();
            println!("note: {note}");
            notes.push(note);
            continue;
        }
        let mut reports = Vec::new();
        for scenario in [Scenario::RouteRr, Scenario::RoutePp, Scenario::Fanout, Scenario::ConnIdle] {
            let a = workload_args(scenario, profile, args.n, &hub_opts);
            eprintln!("compare: {} on {label}", scenario.name());
            let mut env = match Env::start(peer, &hub_opts, progress).await {
                Ok(env) => env,
                // Mosquitto is optional where the comparison only smoke-tests (CI).
                Err(e) if peer == Peer::Mosquitto && profile == Profile::Tiny => {
                    let note = format!("mosquitto did not start, skipped: {e:#}");
                    println!("note: {note}");
                    notes.push(note);
                    break;
                }
                Err(e) => return Err(e),
            };
            env.settle = profile != Profile::Tiny;
            let r = scenarios::run(&mut env, scenario, &a).await;
            env.stop().await;
            match r {
                Ok(mut r) => {
                    r.peer = label.to_owned();
                    r.print();
                    reports.push(r);
                }
                Err(e) => {
                    let mut r = Report::new(scenario.name(), label);
                    r.fail(format!("{e:#}"));
                    r.print();
                    reports.push(r);
                }
            }
        }
        all.extend(reports.iter().cloned());
        per_peer.push((label, reports));
    }
    let table = compare_table(FIGURES, &per_peer);
    println!(
        "   (ratios are the first peer's figure divided by the other's: above 1 means more time, CPU or memory — or, for rates, more throughput)"
    );
    if let Some(path) = &args.json {
        let v = json!({
            "compare": table,
            "reports": all.iter().map(Report::json).collect::<Vec<_>>(),
            "notes": notes,
        });
        write_json(path, &v)?;
    }
    Ok(all)
}
