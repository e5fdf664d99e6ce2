//! Micro-benchmarks of the hot path: frame decode/encode, device lookups through the router, fan-out of one report
//! to 1,000 sessions, and pending-ack insert/complete. Run with `cargo bench --bench hub`.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::value::RawValue;
use switchyard::ids::{DeviceId, UserKey};
use switchyard::metrics::Metrics;
use switchyard::protocol::{self, Inbound, Outbound};
use switchyard::audience::Audience;
use switchyard::device_state::DirtyQueue;
use switchyard::mailbox::{Outbox, SessionHandle};
use switchyard::protocol::CommandKind;
use switchyard::router::pending::PendingTable;
use switchyard::router::{Ack, Command, DeviceAttach, LocalRouter, Router};
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

fn router() -> LocalRouter {
    // The writer's end is dropped: marked states go nowhere, as the bench wants.
    let (dirty, _rx) = DirtyQueue::new();
    LocalRouter::new(Arc::new(Metrics::default()), dirty, 64 * 1024)
}

/// Attaches a device owned by `owner`; returns its outbox.
fn attach(router: &LocalRouter, owner: &UserKey, id: &str) -> (switchyard::ids::SessionId, Outbox) {
    let (handle, rx, _mailbox) = SessionHandle::new(1 << 16);
    let session = handle.id;
    let audience = Audience::owner_only(owner.clone());
    router.attach_device(DeviceAttach { deviceid: DeviceId::new(id), session: handle, audience: Some(audience), state: Default::default() });
    (session, rx)
}

fn registry(c: &mut Criterion) {
    let router = router();
    let owner = UserKey::new("owner");
    let mut keep = Vec::new();
    for i in 0..10_000 {
        keep.push(attach(&router, &owner, &format!("dev{i}")));
    }
    let id = DeviceId::new("dev4242");
    c.bench_function("registry/lookup_10k_devices", |b| b.iter(|| router.audience(std::hint::black_box(&id)).is_some()));
}

fn fanout(c: &mut Criterion) {
    let router = router();
    let owner = UserKey::new("owner");
    let mut outboxes = Vec::new();
    for _ in 0..1_000 {
        let (h, rx, _c) = SessionHandle::new(1 << 12);
        router.attach_app(&owner, h);
        outboxes.push(rx);
    }
    let (session, _rx) = attach(&router, &owner, "dev1");
    let id = DeviceId::new("dev1");
    let params = protocol::raw(r#"{"switch":"on","rssi":-40}"#.to_owned());
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("report_to_1000_sessions", |b| {
        b.iter(|| {
            let delta = serde_json::from_str(params.get()).unwrap();
            router.report(&id, session, delta, &params).unwrap();
            for rx in &mut outboxes {
                let _ = rx.try_recv();
            }
        })
    });
    g.finish();
}

fn pending(c: &mut Criterion) {
    let owner = UserKey::new("owner");
    let table = PendingTable::default();
    c.bench_function("pending/insert_complete", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let (tx, mut rx) = oneshot::channel();
            let key: std::sync::Arc<str> = n.to_string().into();
            table.add(key.clone(), tx, None, 1024);
            table.complete(&key, Ack { error: 0, params: None }, |_| {});
            rx.try_recv().is_ok()
        })
    });
    let router = router();
    let (_session, mut dev_rx) = attach(&router, &owner, "dev2");
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
                router.ack(&id, &protocol::sequence_key(&seq), Ack { error: 0, params: None });
                rt.block_on(pending.wait(tokio::time::Instant::now() + std::time::Duration::from_secs(1)))
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, frames, registry, fanout, pending);
criterion_main!(benches);
