//! Delegation token costs, one core: mint, a hop (third-party block signed by the issuer),
//! an offline attenuation, and verify + authorize as a resource server runs it per request, next
//! to the part of it that is signature verification alone (the floor of any verifier):
//!
//! - `*_three_hops`: user -> planner -> search -> flights tool -> booking: the authority block
//!   and 3 hop blocks, 7 Ed25519 signatures (4 blocks, 3 third-party signatures);
//! - `*_two_hops_attenuated`: user -> planner -> search -> flights tool, then an offline
//!   attenuation by the holder: 4 blocks, 6 Ed25519 signatures (4 blocks, 2 third-party).
//! - `*_cached`: the same token presented again to a verifier with a signature cache
//!   (`Verifier::with_signature_cache`): no signature check, the chain from the cache, the
//!   authorization (revocation, expiry, presenter, depth, rights, checks, policy) in full.
//!
//! Each case runs twice: group `delegation` measures wall-clock time (criterion's default),
//! group `delegation_cpu` the CPU time of the benchmark thread (`CLOCK_THREAD_CPUTIME_ID`), which
//! other processes competing for the cores do not inflate (they still share caches and, on SMT
//! siblings, execution units): compare the two to see how loaded the machine was.
//!
//! Run: `cargo bench -p signet-delegation --bench delegation -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, SystemTime};

use biscuit_auth::builder::Algorithm;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use signet_delegation::{
    Attenuation, DelegationKeys, HopRequest, KeyPair, MintRequest, Request, RevocationList,
    Subject, SubjectKind, Verifier, append_hop, attenuate, mint, read_chain,
};
use signet_spiffe::SpiffeId;

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).expect("SPIFFE ID")
}

/// The CPU time of the calling thread.
struct ThreadCpu;

fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    #[allow(clippy::cast_precision_loss)]
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Nanoseconds, shown like criterion's wall-clock times (with "cpu" appended).
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns cpu")
        } else if typical < 1e6 {
            (1e-3, "µs cpu")
        } else if typical < 1e9 {
            (1e-6, "ms cpu")
        } else {
            (1e-9, "s cpu")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(&self, _: f64, _: &Throughput, values: &mut [f64]) -> &'static str {
        values.iter_mut().for_each(|v| *v = 0.0);
        "n/a"
    }
    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn bench_wall(c: &mut Criterion) {
    bench(c, "delegation");
}

fn bench_cpu(c: &mut Criterion<ThreadCpu>) {
    bench(c, "delegation_cpu");
}

fn bench<M: Measurement>(c: &mut Criterion<M>, group: &str) {
    let root = KeyPair::new_with_algorithm(Algorithm::Ed25519);
    let now = SystemTime::now();
    let rights: BTreeSet<String> = ["flights:read", "flights:book", "hotels:read"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let req = MintRequest {
        token_id: "t0".into(),
        subject: Subject {
            id: "https://idp.example.com#alice".into(),
            kind: SubjectKind::User,
            issuer: "https://idp.example.com".into(),
            name: "alice@example.com".into(),
        },
        actor: id("spiffe://example.org/planner"),
        rights: rights.clone(),
        issued_at: now,
        expires_at: now + Duration::from_secs(600),
        max_depth: 3,
    };
    let t0 = mint(&root, 1, &req).expect("mint");
    let hop_req = |to: &str, tid: &str| HopRequest {
        token_id: tid.into(),
        next_actor: id(to),
        rights: ["flights:read"].iter().map(|s| s.to_string()).collect(),
        at: now,
        expires_at: now + Duration::from_secs(300),
    };
    let mut token = t0.clone();
    for (to, tid) in [
        ("spiffe://example.org/search", "t1"),
        ("spiffe://example.org/flights", "t2"),
        ("spiffe://example.org/booking", "t3"),
    ] {
        let chain = read_chain(&token, &[root.public()]).expect("chain");
        token = append_hop(&token, &chain, &root, &hop_req(to, tid)).expect("hop");
    }
    let three_hops = token.to_base64().expect("encode");
    let mut token = t0.clone();
    for (to, tid) in [
        ("spiffe://example.org/search", "t1"),
        ("spiffe://example.org/flights", "t2"),
    ] {
        let chain = read_chain(&token, &[root.public()]).expect("chain");
        token = append_hop(&token, &chain, &root, &hop_req(to, tid)).expect("hop");
    }
    let two_hops_attenuated = attenuate(
        &token,
        &Attenuation {
            rights: Some(["flights:read"].iter().map(|s| s.to_string()).collect()),
            expires_at: Some(now + Duration::from_secs(120)),
        },
    )
    .expect("attenuate")
    .to_base64()
    .expect("encode");
    let keys = DelegationKeys::from_keys([(1, root.public())]);
    let verifier = Verifier::new(keys, &RevocationList::default()).expect("verifier");

    let mut g = c.benchmark_group(group);
    g.bench_function("mint_ed25519", |b| {
        b.iter(|| black_box(mint(&root, 1, black_box(&req)).expect("mint")))
    });
    let chain0 = read_chain(&t0, &[root.public()]).expect("chain");
    g.bench_function("hop_ed25519", |b| {
        b.iter(|| {
            black_box(
                append_hop(
                    &t0,
                    &chain0,
                    &root,
                    &hop_req("spiffe://example.org/search", "t1"),
                )
                .expect("hop"),
            )
        })
    });
    let narrow = Attenuation {
        rights: Some(["flights:read"].iter().map(|s| s.to_string()).collect()),
        expires_at: Some(now + Duration::from_secs(60)),
    };
    g.bench_function("attenuate_offline", |b| {
        b.iter(|| black_box(attenuate(&t0, &narrow).expect("attenuate")))
    });
    let root_pk = root.public();
    g.bench_function("signatures_only_three_hops", |b| {
        b.iter(|| {
            black_box(
                signet_delegation::Biscuit::from_base64(black_box(&three_hops), root_pk)
                    .expect("parse"),
            )
        })
    });
    g.bench_function("signatures_only_two_hops_attenuated", |b| {
        b.iter(|| {
            black_box(
                signet_delegation::Biscuit::from_base64(black_box(&two_hops_attenuated), root_pk)
                    .expect("parse"),
            )
        })
    });
    g.bench_function("verify_authorize_two_hops_attenuated", |b| {
        b.iter(|| {
            black_box(
                verifier
                    .verify(
                        black_box(&two_hops_attenuated),
                        &Request {
                            presenter: "spiffe://example.org/flights",
                            operation: "flights:read",
                            now,
                        },
                    )
                    .expect("verify"),
            )
        })
    });
    let cached = verifier.clone().with_signature_cache(64);
    g.bench_function("verify_authorize_two_hops_attenuated_cached", |b| {
        b.iter(|| {
            black_box(
                cached
                    .verify(
                        black_box(&two_hops_attenuated),
                        &Request {
                            presenter: "spiffe://example.org/flights",
                            operation: "flights:read",
                            now,
                        },
                    )
                    .expect("verify"),
            )
        })
    });
    g.bench_function("verify_authorize_three_hops_cached", |b| {
        b.iter(|| {
            black_box(
                cached
                    .verify(
                        black_box(&three_hops),
                        &Request {
                            presenter: "spiffe://example.org/booking",
                            operation: "flights:read",
                            now,
                        },
                    )
                    .expect("verify"),
            )
        })
    });
    g.bench_function("verify_authorize_three_hops", |b| {
        b.iter(|| {
            black_box(
                verifier
                    .verify(
                        black_box(&three_hops),
                        &Request {
                            presenter: "spiffe://example.org/booking",
                            operation: "flights:read",
                            now,
                        },
                    )
                    .expect("verify"),
            )
        })
    });
    g.finish();
}

criterion_group!(wall, bench_wall);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = bench_cpu
}
criterion_main!(wall, cpu);
