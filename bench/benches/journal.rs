//! Criterion benches of the journal: a write on a 10k-record journal, opening it (readable, first
//! page, writable), and merging 1k concurrent offline edits per side.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use mend_bench::journal::{build, diverged, prose};
use std::time::{Duration, Instant};

use mend_core::{Body, Journal, Space, model::Share, query::TimelineQuery};

fn write_10k(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let mut journal = build(&path, 10_000).expect("build");
    let mut n = 0;
    c.bench_function("write: add one record to a 10k journal", |b| {
        b.iter(|| {
            n += 1;
            journal
                .add(Body::Share(Share {
                    feeling: prose(n),
                    tough_question: false,
                }))
                .expect("add")
        })
    });
}

fn open_10k(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    drop(build(&path, 10_000).expect("build"));
    let mut group = c.benchmark_group("open");
    group.sample_size(20);
    // Timed: open and the first timeline page (what a launch shows). Untimed: waiting for the
    // background load, so loads never pile up across iterations.
    let opened = |iters: u64, with_page: bool| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let t = Instant::now();
            let journal = Journal::open(&path).expect("open");
            if with_page {
                let page = journal
                    .timeline(&TimelineQuery::default())
                    .expect("timeline");
                assert!(!page.items.is_empty());
            }
            total += t.elapsed();
            journal.ready().expect("load");
        }
        total
    };
    group.bench_function("open a 10k-record journal", |b| {
        b.iter_custom(|iters| opened(iters, false))
    });
    group.bench_function("open a 10k-record journal + first timeline page", |b| {
        b.iter_custom(|iters| opened(iters, true))
    });
    group.bench_function("open a 10k-record journal until writable", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let journal = Journal::open(&path).expect("open");
                journal.ready().expect("load");
                total += t.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn merge_1k(c: &mut Criterion) {
    let mut group = c.benchmark_group("merge");
    group.sample_size(10);
    group.bench_function("merge 1k concurrent offline edits per side", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let (a, bj) = diverged(dir.path(), 100, 1_000).expect("diverge");
                let to_b = a
                    .changes_since(Space::Couple, &bj.heads(Space::Couple).expect("heads"))
                    .expect("changes");
                let to_a = bj
                    .changes_since(Space::Couple, &a.heads(Space::Couple).expect("heads"))
                    .expect("changes");
                (dir, a, bj, to_a, to_b)
            },
            |(dir, mut a, mut bj, to_a, to_b)| {
                a.apply_changes(Space::Couple, &to_a).expect("apply");
                bj.apply_changes(Space::Couple, &to_b).expect("apply");
                (dir, a, bj)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(5));
    targets = write_10k, open_10k, merge_1k
}
criterion_main!(benches);
