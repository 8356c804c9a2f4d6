//! Walks a Capsule listing page by page, following `Link rel="next"`; a listing that repeats a
//! page, or a fanned-out parent that is gone (404), ends without an error.

use std::collections::BTreeSet;

use serde_json::Value;
use url::Url;

use capsule_client::{CapsuleClient, ListingPage};
use capsule_core::observe::Event;
use capsule_core::runlog::RunLog;
use capsule_core::{Result, SyncError};

/// Walks `Link rel="next"` from a first URL.
pub(crate) struct Pager<'a> {
    pub(super) client: &'a CapsuleClient,
    pub(super) next: Option<Url>,
    pub(super) envelope: &'a str,
    pub(super) extras: Vec<&'a str>,
    /// A 404 ends the listing quietly (a fanned-out parent deleted since it was discovered).
    pub(super) missing_ok: bool,
    pub(super) seen: BTreeSet<String>,
    pub(super) log: Option<RunLog>,
}

impl<'a> Pager<'a> {
    pub fn new(client: &'a CapsuleClient, first: Url, envelope: &'a str, extras: Vec<&'a str>) -> Pager<'a> {
        Pager { client, next: Some(first), envelope, extras, missing_ok: false, seen: BTreeSet::new(), log: None }
    }

    /// The page the next call reads, if any.
    pub(crate) fn peek_next(&self) -> Option<&Url> {
        self.next.as_ref()
    }

    pub(crate) async fn next_page(&mut self) -> Result<Option<ListingPage>> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        if !self.seen.insert(url.as_str().to_string()) {
            return Err(SyncError::BadResponse {
                request: url.path().to_string(),
                message: format!("Link rel=\"next\" points back to a page already read ({url})"),
            });
        }
        match self.client.get_listing_page(&url, self.envelope, &self.extras).await {
            Ok(page) => {
                self.next = page.next.clone();
                Ok(Some(page))
            }
            Err(SyncError::Rejected { status: 404, .. }) if self.missing_ok => {
                let message = format!("{} answered 404: the parent no longer exists; skipped", url.path());
                match &self.log {
                    Some(log) => log.info(Event::ParentGone, message, Value::Null),
                    None => tracing::info!(event = Event::ParentGone.as_str(), "{message}"),
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}
