//! The erase marker, when it arrives before the spaces are gone: the erasing partner's other
//! device turns erased (every write refused), and the other partner is told who erased the
//! shared journal, can no longer write to it, and keeps writing to their own space.

mod sim;

use anyhow::{Context, Result, ensure};
use mend_core::{
    Body, Error, Visibility,
    model::{ProcessingNote, Share},
};
use sim::Sim;

fn share(text: &str) -> Body {
    Body::Share(Share {
        feeling: text.into(),
        tough_question: false,
    })
}

fn note(text: &str) -> Body {
    Body::ProcessingNote(ProcessingNote { text: text.into() })
}

#[test]
fn a_marker_that_arrives_in_time_tells_every_device() -> Result<()> {
    let mut sim = Sim::new(91, 2, 1, 4)?;
    sim.settle()?;
    let kept = sim.devices[2].journal_mut().add(share("before"))?;
    sim.settle()?;
    sim.devices[0].journal_mut().mark_erased()?;
    sim.settle()?;

    let alex2 = sim.devices[1].journal_mut();
    let erasure = alex2
        .erasure()?
        .context("Alex's other device is not erased")?;
    ensure!(erasure.by_me, "{erasure:?}");
    ensure!(
        erasure
            .words()
            .contains("erased from one of your devices on"),
        "{}",
        erasure.words()
    );
    ensure!(matches!(alex2.add(share("after")), Err(Error::Erased(_))));
    ensure!(matches!(
        alex2.add_with(note("mine"), Some(Visibility::Private)),
        Err(Error::Erased(_))
    ));

    let blake = sim.devices[2].journal_mut();
    let erasure = blake.erasure()?.context("Blake was not told")?;
    ensure!(!erasure.by_me && erasure.name == "Alex", "{erasure:?}");
    ensure!(
        erasure
            .words()
            .starts_with("Alex erased the shared journal on ")
            && erasure
                .words()
                .ends_with("Your copy stays on this device; nothing more can be shared."),
        "{}",
        erasure.words()
    );
    ensure!(matches!(
        blake.add(share("to nobody")),
        Err(Error::Erased(_))
    ));
    blake.add_with(note("still mine"), Some(Visibility::Private))?;
    ensure!(blake.get(kept)?.id == kept, "Blake lost a record");
    Ok(())
}
