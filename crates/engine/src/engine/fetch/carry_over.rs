//! Carry-over: what a recent read keeps from its base run without asking Capsule (the rows of a
//! snapshot, the children of unchanged parents).

use std::collections::BTreeSet;

use super::*;
use crate::output::PartWriter;
use capsule_client::RawRecord;
use capsule_core::Result;
use capsule_core::observe::Event;
use capsule_core::ports::Cursor;
use capsule_core::runlog::RunLog;

/// Logs what a recent read carried over, and what it reads from Capsule instead.
pub(super) fn log_carried(log: &RunLog, window: &crate::engine::recent::Window, carried: u64, then: &str) {
    let message = format!(
        "carried over {carried} rows from run {} (unchanged since {}); {then}",
        window.base.run_id, window.cutoff
    );
    log.info(Event::RecentWindowRead, message, serde_json::json!({"carried_rows": carried, "cutoff": window.cutoff}));
}

impl Extraction<'_> {
    /// A recent-window run's first step: the previous snapshot's older rows (once per run).
    pub(super) async fn carry_over(&mut self, at: &mut Cursor, writer: &mut PartWriter<'_>) -> Result<(), Halt> {
        let Some(recent) = self.recent.as_mut() else { return Ok(()) };
        if let Some(carried) = at.carried_rows {
            recent.carried = Some(carried);
            return Ok(());
        }
        let window = &recent.window;
        let keep = |row: &RawRecord<'_>| !window.is_newer(row);
        let carried = window.carry_over(self.sink, self.run_id, &keep, writer).await?;
        recent.carried = Some(carried);
        log_carried(&self.log, &recent.window, carried, "reading the newer ones");
        at.carried_rows = Some(carried);
        Ok(())
    }

    /// The parents whose children are to be asked. A recent read asks only the changed ones and,
    /// once per run, carries the others' children over from the previous snapshot; parents no
    /// longer discovered lose theirs.
    pub(super) async fn carry_over_unchanged(
        &mut self,
        found: Found,
        resume: &Cursor,
        children: Children,
        writer: &mut PartWriter<'_>,
    ) -> Result<Vec<Parent>, Halt> {
        let (Some(recent), Some(changed)) = (self.recent.as_mut(), found.changed) else {
            // A whole read, or the remaining (changed) parents a parked recent read saved.
            if let Some(recent) = self.recent.as_mut() {
                recent.carried = resume.carried_rows;
            }
            return Ok(found.parents.into_iter().collect());
        };
        // Asked: the changed parents, and those of the rolling refresh's due slices.
        let refreshes = |id: i64| recent.window.slices.as_ref().is_some_and(|s| s.refreshes(id));
        let (ask, unchanged): (Vec<Parent>, Vec<Parent>) =
            found.parents.into_iter().partition(|p| changed.contains(&(p.child_path.clone(), p.id)) || refreshes(p.id));
        let refreshed = ask.iter().filter(|p| !changed.contains(&(p.child_path.clone(), p.id))).count();
        if let Some(carried) = resume.carried_rows {
            recent.carried = Some(carried);
            return Ok(ask);
        }
        let unchanged: BTreeSet<(Option<String>, i64)> = unchanged.into_iter().map(|p| (p.entity, p.id)).collect();
        let keep = |row: &RawRecord<'_>| {
            let entity = row.str("entity").map(|e| e.into_owned());
            let id = row.get(children.parent_id_column).and_then(|id| id.get().parse::<i64>().ok());
            id.is_some_and(|id| unchanged.contains(&(entity, id)))
        };
        let carried = recent.window.carry_over(self.sink, self.run_id, &keep, writer).await?;
        recent.carried = Some(carried);
        let asking = match recent.window.slices.as_ref().filter(|s| !s.due.is_empty()) {
            Some(slices) => format!(
                "asking the {} parents changed since, or unchanged but in a slice the rolling refresh \
                 asks again ({refreshed} parents, slices {:?})",
                ask.len(),
                slices.due
            ),
            None => format!("asking the {} parents changed since", ask.len()),
        };
        log_carried(&self.log, &recent.window, carried, &asking);
        Ok(ask)
    }
}
