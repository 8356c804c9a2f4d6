//! How many records a listing holds, without reading it: Capsule's listings carry no total, so
//! pages are probed by number, doubling until one is empty, then halving between the last full
//! and the first empty page (about 2·log2(pages) requests: 28 for 10,000 pages). The engine's
//! paging-shift guard and `capsule-sync plan` both count this way.

use url::Url;

use super::CapsuleClient;
use capsule_core::Result;

/// `url` asking for page `n` (its other parameters kept).
pub fn with_page(url: &Url, n: usize) -> Url {
    let pairs: Vec<(String, String)> =
        url.query_pairs().filter(|(k, _)| k != "page").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let mut out = url.clone();
    out.query_pairs_mut().clear().extend_pairs(pairs).append_pair("page", &n.to_string());
    out
}

/// The records of the listing at `first` (any page of it: others are asked for by number) with
/// `per_page` records a page, and the requests the count took. Page 1 is assumed full: call
/// this once a full first page has been seen, or after asking for it.
pub async fn count_records(client: &CapsuleClient, first: &Url, per_page: usize, envelope: &str) -> Result<Counted> {
    let mut search = Search::new(per_page);
    let mut requests = 0;
    loop {
        let page = search.probe();
        requests += 1;
        let items = client.get_listing_page(&with_page(first, page), envelope, &[]).await?.len();
        if let Some(records) = search.saw(page, items) {
            return Ok(Counted { records, requests });
        }
    }
}

/// The requests [`count_records`] takes on a listing of `records` (for plans: the search is
/// deterministic, so its cost is known from the size alone).
pub fn count_requests(records: usize, per_page: usize) -> u64 {
    let mut search = Search::new(per_page);
    let mut requests = 0;
    loop {
        let page = search.probe();
        requests += 1;
        let items = records.saturating_sub((page - 1) * per_page).min(per_page);
        if search.saw(page, items).is_some() {
            return requests;
        }
    }
}

/// A count and what it cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub records: usize,
    pub requests: u64,
}

/// The search: pages probed by doubling until one is empty, then by halving between the last
/// full and the first empty one; a partly full page ends it at once.
struct Search {
    per_page: usize,
    full: usize,
    empty: Option<usize>,
}

impl Search {
    fn new(per_page: usize) -> Search {
        Search { per_page, full: 1, empty: None }
    }

    /// The page to ask for next.
    fn probe(&self) -> usize {
        match self.empty {
            None => self.full * 2,
            Some(empty) => (self.full + empty) / 2,
        }
    }

    /// What page `page` held; the count once it is known.
    fn saw(&mut self, page: usize, items: usize) -> Option<usize> {
        if items > 0 && items < self.per_page {
            return Some((page - 1) * self.per_page + items);
        }
        if items == 0 {
            self.empty = Some(page);
        } else {
            self.full = page;
        }
        match self.empty {
            Some(empty) if empty - self.full <= 1 => Some(self.full * self.per_page),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count as the engine first wrote it, for comparison.
    fn reference(records: usize, per_page: usize) -> (usize, u64) {
        let mut requests = 0;
        let mut items_on = |n: usize| {
            requests += 1;
            records.saturating_sub((n - 1) * per_page).min(per_page)
        };
        let (mut full, mut empty) = (1usize, 2usize);
        loop {
            match items_on(empty) {
                0 => break,
                n if n < per_page => return ((empty - 1) * per_page + n, requests),
                _ => (full, empty) = (empty, empty * 2),
            }
        }
        while empty - full > 1 {
            let mid = (full + empty) / 2;
            match items_on(mid) {
                0 => empty = mid,
                n if n < per_page => return ((mid - 1) * per_page + n, requests),
                _ => full = mid,
            }
        }
        (full * per_page, requests)
    }

    #[test]
    fn the_count_costs_what_the_search_asks_and_is_logarithmic() {
        for records in (101..5000).chain([100_000, 100_050, 1_000_000]) {
            assert_eq!(count_requests(records, 100), reference(records, 100).1, "{records} records");
        }
        assert_eq!(count_requests(1751, 100), 8, "probes 2, 4, 8, 16, 32, 24, 20, 18");
        assert!(count_requests(1_000_000, 100) <= 28);
    }
}
