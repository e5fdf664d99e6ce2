//! Results: latency histograms (HDR, microseconds), the figures a scenario measured, a printed
//! table and the JSON written with `--json`. A [`Report`] is one scenario against one peer; the
//! side-by-side table of `compare` is built from several of them.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use crate::procstat::{self, PhaseStats};

/// A latency histogram in microseconds, from 1 µs to one hour, 3 significant digits.
pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// A histogram shared by many tasks (records are rare enough that a mutex is cheaper than
/// merging thousands of per-connection histograms).
#[derive(Clone)]
pub struct Rec(Arc<Mutex<Histogram<u64>>>);

impl Default for Rec {
    fn default() -> Self {
        Rec(Arc::new(Mutex::new(hist())))
    }
}

impl Rec {
    pub fn record(&self, us: u64) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).saturating_record(us.max(1));
    }

    pub fn take(&self) -> Histogram<u64> {
        let mut h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let out = h.clone();
        h.reset();
        out
    }
}

/// Histogram ⇄ hex text (V2 serialization), for worker processes.
pub fn hist_to_hex(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    let _ = hdrhistogram::serialization::Serializer::serialize(&mut hdrhistogram::serialization::V2Serializer::new(), h, &mut buf);
    hex::encode(buf)
}

pub fn hist_from_hex(s: &str) -> Option<Histogram<u64>> {
    let bytes = hex::decode(s).ok()?;
    hdrhistogram::serialization::Deserializer::new().deserialize(&mut bytes.as_slice()).ok()
}

#[derive(Clone, Debug)]
pub enum Val {
    Num(f64),
    Text(String),
}

#[derive(Clone, Debug)]
pub struct Row {
    pub key: String,
    pub label: String,
    pub value: Val,
    pub unit: &'static str,
}

/// A small table inside a report (e.g. route-p2p's steps).
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<f64>>,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub scenario: String,
    pub peer: String,
    pub params: Vec<(String, String)>,
    pub rows: Vec<Row>,
    pub tables: Vec<Table>,
    pub notes: Vec<String>,
    /// Protocol failures: these make the command exit non-zero.
    pub failures: Vec<String>,
    /// Highest CPU use by other processes seen in any phase (cores).
    pub other_cores: f64,
}

pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "-".to_owned()
    } else if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

impl Report {
    pub fn new(scenario: &str, peer: &str) -> Report {
        Report { scenario: scenario.to_owned(), peer: peer.to_owned(), ..Default::default() }
    }

    pub fn param(&mut self, k: &str, v: impl ToString) {
        self.params.push((k.to_owned(), v.to_string()));
    }

    pub fn num(&mut self, key: &str, label: &str, value: f64, unit: &'static str) {
        self.rows.push(Row { key: key.to_owned(), label: label.to_owned(), value: Val::Num(value), unit });
    }

    pub fn text(&mut self, key: &str, label: &str, value: impl Into<String>) {
        self.rows.push(Row { key: key.to_owned(), label: label.to_owned(), value: Val::Text(value.into()), unit: "" });
    }

    pub fn fail(&mut self, what: impl Into<String>) {
        self.failures.push(what.into());
    }

    pub fn note(&mut self, what: impl Into<String>) {
        self.notes.push(what.into());
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.rows.iter().find(|r| r.key == key).and_then(|r| match r.value {
            Val::Num(v) => Some(v),
            Val::Text(_) => None,
        })
    }

    /// `<key>.p50/.p99/.p999/.max` in milliseconds, plus the count.
    pub fn latency(&mut self, key: &str, label: &str, h: &Histogram<u64>) {
        self.num(&format!("{key}.count"), &format!("{label}: samples"), h.len() as f64, "");
        if h.is_empty() {
            return;
        }
        for (suffix, q) in [("p50", 0.50), ("p99", 0.99), ("p999", 0.999)] {
            self.num(&format!("{key}.{suffix}"), &format!("{label} {suffix}"), h.value_at_quantile(q) as f64 / 1000.0, "ms");
        }
        self.num(&format!("{key}.max"), &format!("{label} max"), h.max() as f64 / 1000.0, "ms");
    }

    /// Server and generator CPU of a phase, and what other processes used meanwhile.
    pub fn phase(&mut self, key: &str, label: &str, p: &PhaseStats) {
        self.num(&format!("{key}.secs"), &format!("{label}: duration"), p.secs, "s");
        self.num(&format!("{key}.server_cores"), &format!("{label}: server CPU"), p.server_cores(), "cores");
        self.num(&format!("{key}.gen_cores"), &format!("{label}: generator CPU"), p.gen_cores(), "cores");
        if let Some(n) = p.nats_cores() {
            self.num(&format!("{key}.nats_cores"), &format!("{label}: NATS server CPU"), n, "cores");
        }
        self.num(&format!("{key}.other_cores"), &format!("{label}: other processes' CPU"), p.other_cores, "cores");
        self.other_cores = self.other_cores.max(p.other_cores);
    }

    pub fn machine_verdict(&self) -> String {
        let cores = procstat::cores();
        if self.other_cores < 0.15 {
            format!("idle ({cores} cores; other processes used {:.2} cores at most)", self.other_cores)
        } else {
            format!("BUSY ({cores} cores; other processes used up to {:.2} cores: latency and CPU figures are inflated)", self.other_cores)
        }
    }

    pub fn print(&self) {
        println!();
        println!("== {} on {} ==", self.scenario, self.peer);
        if !self.params.is_empty() {
            let p: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("   {}", p.join(" "));
        }
        let width = self.rows.iter().map(|r| r.label.len()).max().unwrap_or(10);
        for r in &self.rows {
            let v = match &r.value {
                Val::Num(v) => fmt_num(*v),
                Val::Text(t) => t.clone(),
            };
            println!("   {:<width$}  {:>12} {}", r.label, v, r.unit);
        }
        for t in &self.tables {
            println!("   -- {} --", t.title);
            println!("   {}", t.columns.iter().map(|c| format!("{c:>11}")).collect::<Vec<_>>().join(""));
            for row in &t.rows {
                println!("   {}", row.iter().map(|v| format!("{:>11}", fmt_num(*v))).collect::<Vec<_>>().join(""));
            }
        }
        println!("   machine: {}", self.machine_verdict());
        for n in &self.notes {
            println!("   note: {n}");
        }
        for f in &self.failures {
            println!("   FAILURE: {f}");
        }
    }

    pub fn json(&self) -> Value {
        let mut results = Map::new();
        for r in &self.rows {
            let v = match &r.value {
                Val::Num(v) if v.is_finite() => json!(v),
                Val::Num(_) => Value::Null,
                Val::Text(t) => json!(t),
            };
            results.insert(r.key.clone(), v);
        }
        let params: Map<String, Value> = self.params.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let tables: Vec<Value> = self.tables.iter().map(|t| json!({"title": t.title, "columns": t.columns, "rows": t.rows})).collect();
        json!({
            "scenario": self.scenario,
            "peer": self.peer,
            "params": params,
            "results": results,
            "tables": tables,
            "notes": self.notes,
            "failures": self.failures,
            "machine": {"cores": procstat::cores(), "loadavg": procstat::loadavg(), "other_cores_max": self.other_cores, "verdict": self.machine_verdict()},
        })
    }
}

pub fn write_json(path: &Path, v: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// One figure compared across peers: (label, key, unit, lower is better).
pub struct Figure {
    pub workload: &'static str,
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
}

/// Prints `figures` for each peer's reports side by side, with Switchyard's ratio to each other
/// peer; returns the same as JSON.
pub fn compare_table(figures: &[Figure], peers: &[(&str, Vec<Report>)]) -> Value {
    let find = |peer: &[Report], workload: &str, key: &str| peer.iter().find(|r| r.scenario == workload).and_then(|r| r.get(key));
    println!();
    println!("== compare: the same workloads against each peer ==");
    let names: Vec<&str> = peers.iter().map(|p| p.0).collect();
    let mut header = format!("   {:<44}", "figure");
    for n in &names {
        header += &format!("{n:>12}");
    }
    for n in names.iter().skip(1) {
        header += &format!("{:>12}", format!("{}/{}", short(names[0]), short(n)));
    }
    println!("{header}");
    let mut rows = Vec::new();
    for f in figures {
        let vals: Vec<Option<f64>> = peers.iter().map(|(_, reps)| find(reps, f.workload, f.key)).collect();
        let mut line = format!("   {:<44}", format!("{} {} ({})", f.workload, f.label, f.unit));
        for v in &vals {
            line += &format!("{:>12}", v.map(fmt_num).unwrap_or_else(|| "-".into()));
        }
        let mut ratios = Map::new();
        for (i, v) in vals.iter().enumerate().skip(1) {
            let r = match (vals[0], v) {
                (Some(a), Some(b)) if *b != 0.0 => Some(a / b),
                _ => None,
            };
            line += &format!("{:>12}", r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into()));
            ratios.insert(format!("{}/{}", names[0], names[i]), r.map_or(Value::Null, |r| json!(r)));
        }
        println!("{line}");
        let values: Map<String, Value> =
            names.iter().zip(&vals).map(|(n, v)| ((*n).to_owned(), v.map_or(Value::Null, |v| json!(v)))).collect();
        rows.push(json!({"workload": f.workload, "figure": f.key, "label": f.label, "unit": f.unit, "values": values, "ratios": ratios}));
    }
    Value::Array(rows)
}

fn short(name: &str) -> &str {
    match name {
        "switchyard" => "sy",
        "mosquitto" => "mosq",
        other => other,
    }
}
