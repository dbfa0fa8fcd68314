//! The device's problem log is rate-limited: a relay that serves bad chunk after bad chunk
//! gets one log line per kind per minute, and the next line says how many were held back.

mod sim;

use std::sync::{Arc, Mutex};

use anyhow::{Result, ensure};
use mend_core::{Body, model::Share, sync::ProblemKind};
use sim::Sim;
use tracing::{
    Event, Metadata, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};

/// Collects the `held_back` field of every "sync problem" line.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u64>>>);

struct HeldBack(Option<u64>, bool);

impl Visit for HeldBack {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "held_back" {
            self.0 = Some(value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{value:?}") == "sync problem" {
            self.1 = true;
        }
    }
}

impl Subscriber for Lines {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut seen = HeldBack(None, false);
        event.record(&mut seen);
        if let (Some(held), true) = (seen.0, seen.1)
            && let Ok(mut lines) = self.0.lock()
        {
            lines.push(held);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn tampered(sim: &Sim) -> usize {
    sim.devices[1]
        .status
        .problems
        .iter()
        .filter(|p| matches!(p.kind, ProblemKind::Tampered { .. }))
        .count()
}

#[test]
fn a_relay_serving_bad_chunks_again_and_again_is_logged_once_a_minute_with_a_count() -> Result<()> {
    let lines = Lines::default();
    let seen = lines.clone();
    tracing::subscriber::with_default(lines, || -> Result<()> {
        let mut sim = Sim::new(43, 1, 1, 1_000)?;
        sim.settle()?;
        let couple = sim.couple_keys.space_id;
        for n in 0..5 {
            sim.relay.corrupt_next(couple);
            sim.devices[0].journal_mut().add(Body::Share(Share {
                feeling: format!("altered {n}"),
                tough_question: false,
            }))?;
            sim.settle()?;
        }
        ensure!(
            tampered(&sim) >= 5,
            "B saw {} altered chunks",
            tampered(&sim)
        );
        // A minute later the next one is logged, with the count of those held back.
        sim.advance(61_000)?;
        sim.relay.corrupt_next(couple);
        sim.devices[0].journal_mut().add(Body::Share(Share {
            feeling: "altered last".into(),
            tough_question: false,
        }))?;
        sim.settle()?;
        Ok(())
    })?;
    let lines = seen.0.lock().map(|l| l.clone()).unwrap_or_default();
    // Held back: four altered chunks. (They are A's, a device whose chunks B merged before,
    // so B waits for a snapshot to heal them and never gives them up.)
    ensure!(
        lines == [0, 4],
        "logged lines (held back counts): {lines:?}"
    );
    Ok(())
}
