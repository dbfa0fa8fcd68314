//! Epochs under the simulation: a lost device is shut out by a rotation while the other
//! partner is offline and writing, and a "forget" rotation leaves a removed record's words in
//! no device's database.

mod sim;

use anyhow::{Result, ensure};
use mend_core::{Body, journal::Reason, model::Share};
use sim::Sim;

fn share(text: &str) -> Body {
    Body::Share(Share {
        feeling: text.into(),
        tough_question: false,
    })
}

fn feelings(sim: &Sim, d: usize) -> Result<Vec<String>> {
    let mut out: Vec<String> = sim.devices[d]
        .journal()
        .records()?
        .into_iter()
        .filter_map(|r| match r.body {
            Body::Share(s) => Some(s.feeling),
            _ => None,
        })
        .collect();
    out.sort();
    Ok(out)
}

#[test]
fn a_lost_device_is_shut_out_and_an_offline_partner_keeps_what_it_wrote() -> Result<()> {
    // Alex's phone (0) and lost tablet (1); Blake's phone (2).
    let mut sim = Sim::new(21, 2, 1, 1_000)?;
    sim.settle()?;
    sim.devices[0].journal_mut().add(share("before"))?;
    sim.devices[1].journal_mut().add(share("from the tablet"))?;
    sim.settle()?;
    ensure!(
        feelings(&sim, 1)? == ["before", "from the tablet"],
        "the tablet had synced"
    );

    // Blake is away and writes; Alex removes the tablet meanwhile.
    sim.devices[2].offline = true;
    sim.devices[2]
        .journal_mut()
        .add(share("written while apart"))?;
    sim.rotate(0, Reason::RemoveDevices, &[1])?;
    for _ in 0..4 {
        sim.round_of(0)?;
    }
    ensure!(sim.devices[0].journal().epoch()? == 1, "Alex's phone moved");
    sim.devices[0].journal_mut().add(share("after the move"))?;
    sim.round_of(0)?;

    // The tablet reads the announcement, finds no box for itself, and knows.
    sim.round_of(1)?;
    ensure!(sim.devices[1].removed, "the tablet was not told");
    ensure!(sim.devices[1].journal().epoch()? == 0);
    // What it writes now reaches nobody in the new epoch.
    sim.devices[1]
        .journal_mut()
        .add(share("from the removed tablet"))?;
    sim.round_of(1)?;

    // Blake comes back: moves, and keeps what it wrote while apart.
    sim.devices[2].offline = false;
    for _ in 0..4 {
        sim.round_of(2)?;
        sim.round_of(0)?;
    }
    ensure!(sim.devices[2].journal().epoch()? == 1, "Blake moved");
    let alex = feelings(&sim, 0)?;
    let blake = feelings(&sim, 2)?;
    ensure!(alex == blake, "not converged: {alex:?} / {blake:?}");
    ensure!(
        alex == [
            "after the move",
            "before",
            "from the tablet",
            "written while apart"
        ],
        "lost or extra: {alex:?}"
    );
    ensure!(
        !feelings(&sim, 1)?.contains(&"after the move".to_string()),
        "the removed tablet reads the new epoch"
    );
    // Both partners are still there, each with their devices certified again.
    let partners = sim.devices[2].journal().partners();
    ensure!(partners.len() == 2, "{} partners", partners.len());
    ensure!(
        partners.iter().all(|p| !p.devices.is_empty()),
        "a partner without a certified device: {partners:?}"
    );
    let tablet = sim.devices[1].journal().device();
    ensure!(
        partners
            .iter()
            .all(|p| p.devices.iter().all(|d| d.id != tablet)),
        "the removed tablet is still listed"
    );
    Ok(())
}

#[test]
fn after_a_forget_rotation_the_removed_words_are_in_no_database() -> Result<()> {
    let mut sim = Sim::new(5, 1, 1, 1_000)?;
    sim.settle()?;
    let secret = "WORDS-TO-FORGET-7q";
    let id = sim.devices[0].journal_mut().add(share(secret))?;
    sim.devices[0].journal_mut().add(share("kept"))?;
    sim.settle()?;
    ensure!(feelings(&sim, 1)?.contains(&secret.to_string()));
    sim.devices[0].journal_mut().remove(id)?;
    sim.settle()?;
    let holds = |sim: &Sim, d: usize| -> Result<bool> {
        let mut found = false;
        for suffix in ["", "-wal"] {
            let mut path = sim.devices[d].path.clone().into_os_string();
            path.push(suffix);
            if let Ok(bytes) = std::fs::read(&path) {
                found |= bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            }
        }
        Ok(found)
    };
    // The history still holds the words before the rotation (else the check proves nothing).
    ensure!(
        holds(&sim, 0)? || holds(&sim, 1)?,
        "the words were never on disk"
    );

    sim.rotate(1, Reason::Forget, &[])?;
    sim.settle()?;
    for d in 0..2 {
        ensure!(
            sim.devices[d].journal().epoch()? == 1,
            "device {d} did not move"
        );
        ensure!(
            !holds(&sim, d)?,
            "device {d}'s database still holds the words"
        );
        let record = sim.devices[d].journal().get(id)?;
        ensure!(record.removed, "the placeholder is gone on device {d}");
    }
    ensure!(feelings(&sim, 0)? == feelings(&sim, 1)?);
    ensure!(feelings(&sim, 0)?.contains(&"kept".to_string()));
    Ok(())
}
