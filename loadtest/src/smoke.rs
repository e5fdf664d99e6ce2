//! `loadtest smoke`: every scenario at a tiny size for about a second each, then a tiny
//! `compare`, against a hub started here (by default the `switchyard` next to this binary, so a
//! debug build tests a debug hub). Meant for CI: it fails only on protocol failures (refused
//! logins, wrong or missing replies, lost deliveries, a hub that died), never on performance,
//! and it needs no Mosquitto (skipped with a note when absent).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;

use crate::compare::{self, CompareArgs, Profile};
use crate::hub::HubOpts;
use crate::peers::{Env, Peer};
use crate::report::{Report, write_json};
use crate::scenarios::{self, RunArgs, Scenario};

#[derive(clap::Args, Debug, Clone)]
pub struct SmokeArgs {
    /// Write every report as JSON
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Skip the tiny comparison with Mosquitto and the echo server
    #[arg(long)]
    pub no_compare: bool,
    #[command(flatten)]
    pub hub: HubOpts,
}

fn tiny(scenario: Scenario, hub: &HubOpts) -> RunArgs {
    let mut a = RunArgs { hub: hub.clone(), concurrency: 64, hb_secs: Some(0.5), ..Default::default() };
    match scenario {
        Scenario::ConnIdle => (a.n, a.rate, a.duration) = (Some(50), Some(0.0), Some(1.0)),
        Scenario::ConnTls => (a.n, a.rate, a.duration) = (Some(20), Some(0.0), Some(1.0)),
        Scenario::ConnStorm => (a.n, a.rate, a.duration) = (Some(50), Some(0.0), Some(30.0)),
        Scenario::RouteRr => a.duration = Some(1.0),
        Scenario::RoutePp => (a.n, a.steps, a.step_secs) = (Some(4), vec![100.0, 200.0], Some(1.0)),
        Scenario::RouteTimeout => {
            (a.n, a.rate, a.duration) = (Some(4), Some(20.0), Some(1.0));
            a.hub.ack_timeout_ms = 300;
        }
        Scenario::Fanout => (a.n, a.users, a.rate, a.duration) = (Some(10), Some(3), Some(50.0), Some(1.0)),
        Scenario::SlowConsumer => (a.n, a.rate, a.duration, a.pad) = (Some(5), Some(300.0), Some(2.0), Some(1024)),
        Scenario::Report => (a.n, a.rate, a.duration) = (Some(5), Some(200.0), Some(1.0)),
        Scenario::Soak => {
            (a.n, a.rate, a.duration, a.interval_secs) = (Some(40), Some(0.0), Some(3.0), Some(1.0));
            (a.active_pct, a.churn_pct) = (Some(50.0), Some(600.0));
        }
    }
    a
}

/// Returns true when nothing failed.
pub async fn smoke(args: &SmokeArgs, progress: bool) -> Result<bool> {
    let t0 = Instant::now();
    let mut reports: Vec<Report> = Vec::new();
    for scenario in Scenario::ALL {
        let a = tiny(scenario, &args.hub);
        let t = Instant::now();
        let r = match Env::start(Peer::Switchyard, &a.hub, progress).await {
            Ok(mut env) => {
                env.settle = false;
                let r = scenarios::run(&mut env, scenario, &a).await;
                env.stop().await;
                r
            }
            Err(e) => Err(e),
        };
        let r = r.unwrap_or_else(|e| {
            let mut r = Report::new(scenario.name(), "switchyard");
            r.fail(format!("{e:#}"));
            r
        });
        r.print();
        eprintln!(
            "smoke: {} {} in {:.1} s",
            scenario.name(),
            if r.failures.is_empty() { "ok" } else { "FAILED" },
            t.elapsed().as_secs_f64()
        );
        reports.push(r);
    }
    if !args.no_compare {
        let c = CompareArgs {
            quick: true,
            json: None,
            peers: vec![Peer::Switchyard, Peer::Mosquitto, Peer::Echo],
            history_both: true,
            n: None,
            hub: args.hub.clone(),
        };
        match compare::compare(&c, Profile::Tiny, progress).await {
            Ok(rs) => reports.extend(rs),
            Err(e) => {
                let mut r = Report::new("compare", "all");
                r.fail(format!("{e:#}"));
                reports.push(r);
            }
        }
    }
    let failed: Vec<&Report> = reports.iter().filter(|r| !r.failures.is_empty()).collect();
    println!();
    println!("== smoke: {} reports in {:.1} s ==", reports.len(), t0.elapsed().as_secs_f64());
    for r in &failed {
        for f in &r.failures {
            println!("   FAILED {} on {}: {f}", r.scenario, r.peer);
        }
    }
    println!("{} passed, {} failed", reports.len() - failed.len(), failed.len());
    if let Some(path) = &args.json {
        write_json(path, &json!({"reports": reports.iter().map(Report::json).collect::<Vec<_>>()}))?;
    }
    Ok(failed.is_empty())
}
