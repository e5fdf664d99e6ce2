//! Helpers for tests that run the real `switchyard` binary: one-shot runs with a deadline, and
//! long-running children whose stdout lines can be awaited and which are killed on drop.
//!
//! With `SWITCHYARD_TEST_DATABASE_URL` set, every `serve` or `admin` run that names a data
//! directory (`--data-dir` or `SWITCHYARD_DATA_DIR`) is given that directory's own fresh
//! PostgreSQL database in `SWITCHYARD_DATABASE_URL` (see [`with_database`]).
#![allow(dead_code)]

// The test databases live in `common`; a test that also has `mod common;` loads it twice, harmlessly.
#[allow(clippy::duplicate_mod)]
#[path = "../common/mod.rs"]
mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long any single wait on a child may take.
pub const WAIT: Duration = Duration::from_secs(20);

#[allow(unused_imports)]
pub use common::database::{backend_name, database_for, open_test_store};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchyard")
}

/// A command for the binary with no `SWITCHYARD_*` variables inherited from the caller's
/// environment, so only what a test sets counts.
pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SWITCHYARD_") {
            c.env_remove(&k);
        }
    }
    c.env("RUST_LOG", "info");
    c.stdin(Stdio::null());
    c
}

/// A finished run.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.status, self.stdout, self.stderr)
    }
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// In PostgreSQL mode, points a `serve` or `admin` command at the database of the data directory
/// it names, unless the command sets its own `SWITCHYARD_DATABASE_URL` or `--database-url`. A
/// command naming no data directory is left alone (`--help`, or the default `./data`).
pub fn with_database(cmd: &mut Command) {
    if common::database::server_url().is_none() {
        return;
    }
    let args: Vec<&OsStr> = cmd.get_args().collect();
    if !args.first().is_some_and(|a| *a == "serve" || *a == "admin") {
        return;
    }
    let flag = |name: &str| {
        let inline = format!("{name}=");
        args.iter().enumerate().find_map(|(i, a)| {
            let a = a.to_str()?;
            if a == name { args.get(i + 1).map(PathBuf::from) } else { a.strip_prefix(&inline).map(PathBuf::from) }
        })
    };
    let var = |name: &str| cmd.get_envs().find(|(k, _)| *k == name).map(|(_, v)| v.map(PathBuf::from));
    if flag("--database-url").is_some() || var("SWITCHYARD_DATABASE_URL").flatten().is_some() {
        return;
    }
    let Some(dir) = flag("--data-dir").or_else(|| var("SWITCHYARD_DATA_DIR").flatten()) else { return };
    let dir = if dir.is_relative() {
        let cwd = cmd.get_current_dir().map(Path::to_path_buf).unwrap_or_else(|| std::env::current_dir().unwrap());
        cwd.join(dir)
    } else {
        dir
    };
    let url = database_for(&dir).expect("a test database server is configured");
    cmd.env("SWITCHYARD_DATABASE_URL", url);
}

/// Runs `cmd` to completion; kills it and panics if it takes longer than `WAIT`.
pub fn run(mut cmd: Command) -> Output {
    with_database(&mut cmd);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning switchyard");
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {WAIT:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// Runs `switchyard <args>` to completion.
pub fn sy(args: &[&str]) -> Output {
    run(command(args))
}

/// Runs `switchyard admin --data-dir DIR <args>`, asserts success and returns stdout.
pub fn admin_ok(dir: &Path, args: &[&str]) -> String {
    let out = admin(dir, args);
    assert!(out.success(), "admin {args:?} failed\n{out}");
    out.stdout
}

pub fn admin(dir: &Path, args: &[&str]) -> Output {
    let d = dir.to_string_lossy().into_owned();
    let mut all = vec!["admin", "--data-dir", d.as_str()];
    all.extend_from_slice(args);
    sy(&all)
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// True for `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in lowercase hex.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices()
            .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_digit() || ('a'..='f').contains(&c) })
}

/// A long-running child. Its stdout lines arrive on a channel (and are kept for failure
/// messages); stderr is collected. Dropping it kills the process.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    lines: Receiver<String>,
    seen: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        with_database(&mut cmd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match err.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        Proc { name: name.to_owned(), child: Some(child), lines: rx, seen: Arc::default(), stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process already reaped").id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout_so_far(&self) -> Vec<String> {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.lock().unwrap().push(l);
        }
        self.seen.lock().unwrap().clone()
    }

    fn report(&self) -> String {
        format!("--- {} stdout ---\n{}\n--- {} stderr ---\n{}", self.name, self.stdout_so_far().join("\n"), self.name, self.stderr())
    }

    /// Waits for a stdout line (new or already seen) that satisfies `pred` and returns it.
    pub fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.seen.lock().unwrap().iter().find(|l| pred(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.lock().unwrap().push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("{}: no {what} within {WAIT:?}\n{}", self.name, self.report()),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().and_then(|c| c.wait().ok());
                    panic!("{}: exited ({status:?}) before {what}\n{}", self.name, self.report())
                }
            }
        }
    }

    /// Waits for the process to exit on its own (killing it after `WAIT`) and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("process already reaped");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{}: did not exit within {WAIT:?}\n{}", self.name, self.report());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status if the process has already ended, without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().expect("process already reaped").try_wait().unwrap()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status().expect("running kill").success();
        assert!(ok, "kill -{name} {} failed", self.pid());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}
