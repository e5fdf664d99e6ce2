//! Micro-benchmarks of the hot path: frame decode/encode, device lookups through the router, fan-out of one report
//! to 1,000 sessions, and pending-ack insert/complete. Run with `cargo bench --bench hub`.
//!
//! `registry_shape` compares, in one run, the registry's map shape (64 `Mutex<HashMap>` shards)
//! with `dashmap` (its default shard count, and 64) for lookups and insert/remove from two
//! threads at once: `cargo bench --bench hub -- registry_shape`.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dashmap::DashMap;
use serde_json::value::RawValue;
use switchyard::audience::Audience;
use switchyard::device_state::DirtyQueue;
use switchyard::ids::{DeviceId, UserKey};
use switchyard::mailbox::{Outbox, SessionHandle};
use switchyard::metrics::Metrics;
use switchyard::protocol::CommandKind;
use switchyard::protocol::{self, Inbound, Outbound};
use switchyard::router::pending::{Asker, PendingTable};
use switchyard::router::{Ack, Command, DeviceAttach, LocalRouter, Quota, Router};
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
    LocalRouter::new(Arc::new(Metrics::default()), dirty, 64 * 1024, Quota { per_user: 1024 })
}

/// Attaches a device owned by `owner`; returns its outbox.
fn attach(router: &LocalRouter, owner: &UserKey, id: &str) -> (switchyard::ids::SessionId, Outbox) {
    let (handle, rx, _mailbox) = SessionHandle::new(1 << 16);
    let session = handle.id;
    let audience = Audience::owner_only(owner.clone());
    router.attach_device(DeviceAttach {
        deviceid: DeviceId::new(id),
        session: handle,
        audience: Some(audience),
        state: Default::default(),
        since: 0,
    });
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
            table.add(key.clone(), tx, None, Asker { user: &owner, owner: true }, Quota { per_user: 1024 }, 1024);
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
                let pending = router
                    .command_here(&owner, Command { kind: CommandKind::Update, deviceid: &id, sequence: &seq, params: &params })
                    .unwrap();
                let _ = dev_rx.try_recv();
                router.ack(&id, &protocol::sequence_key(&seq), Ack { error: 0, params: None });
                rt.block_on(pending.wait(tokio::time::Instant::now() + std::time::Duration::from_secs(1)))
            },
            BatchSize::SmallInput,
        )
    });
}

/// The registry's shape (a copy of its private `Sharded`): a fixed array of mutex-guarded maps,
/// picked by key hash.
struct Sharded<K, V> {
    shards: Box<[Mutex<HashMap<K, V>>]>,
    hasher: RandomState,
}

impl<K: Hash + Eq, V> Sharded<K, V> {
    fn new(count: usize) -> Self {
        Sharded { shards: (0..count).map(|_| Mutex::new(HashMap::new())).collect(), hasher: RandomState::new() }
    }

    fn shard(&self, key: &K) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
        let i = self.hasher.hash_one(key) as usize % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the registry does with its device map, for either shape. The value stands in for
/// `Arc<DeviceLink>`: a lookup clones an `Arc`.
trait DeviceMap: Sync {
    fn get(&self, id: &DeviceId) -> Option<Arc<u64>>;
    fn insert(&self, id: DeviceId, link: Arc<u64>);
    fn remove(&self, id: &DeviceId);
}

impl DeviceMap for Sharded<DeviceId, Arc<u64>> {
    fn get(&self, id: &DeviceId) -> Option<Arc<u64>> {
        self.shard(id).get(id).cloned()
    }
    fn insert(&self, id: DeviceId, link: Arc<u64>) {
        self.shard(&id).insert(id, link);
    }
    fn remove(&self, id: &DeviceId) {
        self.shard(id).remove(id);
    }
}

impl DeviceMap for DashMap<DeviceId, Arc<u64>> {
    fn get(&self, id: &DeviceId) -> Option<Arc<u64>> {
        DashMap::get(self, id).map(|r| r.value().clone())
    }
    fn insert(&self, id: DeviceId, link: Arc<u64>) {
        DashMap::insert(self, id, link);
    }
    fn remove(&self, id: &DeviceId) {
        DashMap::remove(self, id);
    }
}

const THREADS: usize = 2;

/// Device ids in a scattered order, so that consecutive operations hit different shards.
fn device_ids(prefix: &str, n: usize) -> Vec<DeviceId> {
    let mut ids: Vec<DeviceId> = (0..n).map(|i| DeviceId::new(format!("{prefix}{:08}", i))).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..ids.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ids.swap(i, (x % (i as u64 + 1)) as usize);
    }
    ids
}

/// Runs `op(thread, i)` for `i` in `0..iters` on [`THREADS`] threads started together; the
/// wall time until the last one is done.
fn contended(iters: u64, op: impl Fn(usize, usize) + Sync) -> Duration {
    let start = Barrier::new(THREADS + 1);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (start, op) = (&start, &op);
            s.spawn(move || {
                start.wait();
                for i in 0..iters as usize {
                    op(t, i);
                }
            });
        }
        start.wait();
        let began = Instant::now();
        // The scope joins the threads before it returns.
        began
    })
    .elapsed()
}

/// Adds the three contended workloads for one map, filled with `present`, to `g`.
fn bench_shape(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, map: impl DeviceMap, present: &[DeviceId]) {
    for (i, id) in present.iter().enumerate() {
        map.insert(id.clone(), Arc::new(i as u64));
    }
    // Per thread, ids that are not in the map: an iteration inserts one and removes it again.
    let absent: Vec<Vec<DeviceId>> = (0..THREADS).map(|t| device_ids(&format!("new{t}-"), 4096)).collect();
    let connect_disconnect = |t: usize, i: usize| {
        let id = &absent[t][i % absent[t].len()];
        map.insert(id.clone(), Arc::new(i as u64));
        map.remove(id);
    };
    g.bench_function(BenchmarkId::new("lookup_2_threads", name), |b| {
        b.iter_custom(|iters| {
            contended(iters, |t, i| {
                let id = &present[(i + t * present.len() / THREADS) % present.len()];
                assert!(std::hint::black_box(map.get(id)).is_some());
            })
        })
    });
    g.bench_function(BenchmarkId::new("insert_remove_2_threads", name), |b| b.iter_custom(|iters| contended(iters, connect_disconnect)));
    // One thread routes to devices while the other connects and disconnects some.
    g.bench_function(BenchmarkId::new("lookup_while_insert_remove", name), |b| {
        b.iter_custom(|iters| {
            contended(iters, |t, i| {
                if t == 0 {
                    std::hint::black_box(map.get(&present[i % present.len()]));
                } else {
                    connect_disconnect(t, i);
                }
            })
        })
    });
}

/// The registry's 64 `Mutex<HashMap>` shards against `DashMap` (default shards, and 64), in
/// one run. Each iteration is one operation on each of the two threads.
fn registry_shape(c: &mut Criterion) {
    for keys in [10_000, 100_000] {
        let present = device_ids("dev", keys);
        let mut g = c.benchmark_group(format!("registry_shape/{keys}_devices"));
        g.throughput(Throughput::Elements(THREADS as u64));
        bench_shape(&mut g, "sharded_mutex_64", Sharded::new(64), &present);
        bench_shape(&mut g, "dashmap_default_shards", DashMap::new(), &present);
        bench_shape(&mut g, "dashmap_64_shards", DashMap::with_shard_amount(64), &present);
        g.finish();
    }
}

criterion_group!(benches, frames, registry, fanout, pending, registry_shape);
criterion_main!(benches);
