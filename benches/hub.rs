//! Micro-benchmarks of the hot path: frame decode/encode, registry lookups, fan-out of one report
//! to 1,000 sessions, and pending-ack insert/complete. Run with `cargo bench --bench hub`.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::value::RawValue;
use switchyard::ids::{DeviceId, UserKey};
use switchyard::metrics::Metrics;
use switchyard::protocol::{self, Inbound, Outbound};
use switchyard::registry::{Ack, DeviceLink, SessionHandle};
use switchyard::router::{Command, CommandKind, LocalRouter, Router};
use switchyard::audience::Audience;
use tokio::sync::oneshot;

const APP_UPDATE: &str = r#"{"action":"update","deviceid":"1000000001","apikey":"74d75307-0c78-8d73-028b-b3a4fd4d53cc","userAgent":"app","sequence":"1585297259553","params":{"switch":"on"}}"#;

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_app_update", |b| b.iter(|| Inbound::parse(std::hint::black_box(APP_UPDATE)).unwrap().sequence.is_some()));
    let f = Inbound::parse(APP_UPDATE).unwrap();
    g.bench_function("encode_forward", |b| {
        b.iter(|| {
            Outbound {
                action: Some("update"),
                deviceid: f.deviceid.as_deref(),
                apikey: f.apikey.as_deref(),
                user_agent: Some("app"),
                sequence: f.sequence,
                ts: Some(0),
                params: f.params,
                from: Some("app"),
                ..Default::default()
            }
            .to_text()
        })
    });
    g.finish();
}

fn link_for(owner: &UserKey, id: &str) -> (Arc<DeviceLink>, switchyard::registry::Outbox) {
    let (handle, rx, _control) = SessionHandle::new(1 << 16);
    let audience = Audience::owner_only(owner.clone());
    (Arc::new(DeviceLink::new(DeviceId::new(id), handle, Some(audience), Default::default())), rx)
}

fn registry(c: &mut Criterion) {
    let router = LocalRouter::new(Arc::new(Metrics::default()));
    let owner = UserKey::new("owner");
    let mut keep = Vec::new();
    for i in 0..10_000 {
        let (l, rx) = link_for(&owner, &format!("dev{i}"));
        router.attach_device(l);
        keep.push(rx);
    }
    let id = DeviceId::new("dev4242");
    c.bench_function("registry/lookup_10k_devices", |b| b.iter(|| router.registry().device(std::hint::black_box(&id)).is_some()));
}

fn fanout(c: &mut Criterion) {
    let metrics = Arc::new(Metrics::default());
    let router = LocalRouter::new(metrics);
    let owner = UserKey::new("owner");
    let mut outboxes = Vec::new();
    for _ in 0..1_000 {
        let (h, rx, _c) = SessionHandle::new(1 << 12);
        router.attach_app(&owner, h);
        outboxes.push(rx);
    }
    let (link, _rx) = link_for(&owner, "dev1");
    let params = protocol::raw(r#"{"switch":"on","rssi":-40}"#.to_owned());
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("report_to_1000_sessions", |b| {
        b.iter(|| {
            router.report(&link, &params);
            for rx in &mut outboxes {
                let _ = rx.try_recv();
            }
        })
    });
    g.finish();
}

fn pending(c: &mut Criterion) {
    let owner = UserKey::new("owner");
    let (link, _rx) = link_for(&owner, "dev1");
    c.bench_function("pending/insert_complete", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let (tx, mut rx) = oneshot::channel();
            let key: std::sync::Arc<str> = n.to_string().into();
            link.add_waiter(key.clone(), tx, None, 1024);
            link.complete(&key, Ack { error: 0, params: None }, |_| {});
            rx.try_recv().is_ok()
        })
    });
    let router = LocalRouter::new(Arc::new(Metrics::default()));
    let (link, mut dev_rx) = link_for(&owner, "dev2");
    router.attach_device(link.clone());
    let id = DeviceId::new("dev2");
    let params = protocol::raw(r#"{"switch":"on"}"#.to_owned());
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    c.bench_function("route/command_ack_roundtrip", |b| {
        let mut n = 0u64;
        b.iter_batched(
            || {
                n += 1;
                RawValue::from_string(format!("\"{n}\"")).unwrap()
            },
            |seq| {
                let pending =
                    router.command(&owner, Command { kind: CommandKind::Update, deviceid: &id, sequence: &seq, params: &params }).unwrap();
                let _ = dev_rx.try_recv();
                link.complete(&protocol::sequence_key(&seq), Ack { error: 0, params: None }, |_| {});
                rt.block_on(pending.wait(tokio::time::Instant::now() + std::time::Duration::from_secs(1)))
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, frames, registry, fanout, pending);
criterion_main!(benches);
