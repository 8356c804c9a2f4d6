//! The live view's model: what each table of the sync is doing, and the frame that shows it in
//! at most a given number of lines of a given width. Pure: the screen draws the frame.

use std::collections::BTreeMap;
use std::time::Instant;

use capsule_core::ports::RunState;
use capsule_core::progress::Activity;
use capsule_core::ratelimit::RateLimitStatus;
use chrono::{DateTime, Local, Utc};

/// Every table of one sync, in the order they were given.
pub struct Board {
    integration: String,
    tables: Vec<&'static str>,
    activity: BTreeMap<&'static str, Activity>,
    /// Requests of each table's run so far (the latest `Reading`).
    requests: BTreeMap<&'static str, u64>,
    /// What each table's run is expected to spend, where known (`plan::expected_requests`).
    expected: BTreeMap<&'static str, u64>,
    started: Instant,
}

impl Board {
    pub fn new(integration: &str, tables: Vec<&'static str>, expected: BTreeMap<&'static str, u64>) -> Board {
        Board {
            integration: integration.to_string(),
            tables,
            activity: BTreeMap::new(),
            requests: BTreeMap::new(),
            expected,
            started: Instant::now(),
        }
    }

    pub fn update(&mut self, table: &'static str, activity: Activity) {
        if let Activity::Reading { requests, .. } = activity {
            self.requests.insert(table, requests);
        }
        self.activity.insert(table, activity);
    }

    /// The frame: a header line, then one line per table (finished tables folded into one line,
    /// then the rest counted, when `height` is short), each at most `width` characters.
    pub fn frame(&self, width: usize, height: usize, budget: Option<RateLimitStatus>) -> Vec<String> {
        let mut lines = vec![self.header(budget)];
        let room = height.saturating_sub(1).max(1);
        let (finished, open): (Vec<&str>, Vec<&str>) =
            self.tables.iter().partition(|t| matches!(self.activity.get(*t), Some(Activity::Finished { .. })));
        if self.tables.len() <= room {
            lines.extend(self.tables.iter().map(|t| self.table_line(t)));
        } else {
            let mut rest = room;
            if !finished.is_empty() {
                lines.push(format!("  ✓ {} finished: {}", finished.len(), finished.join(", ")));
                rest -= 1;
            }
            let shown = if open.len() > rest { rest.saturating_sub(1) } else { open.len() };
            lines.extend(open[..shown].iter().map(|t| self.table_line(t)));
            if shown < open.len() {
                lines.push(format!("  … {} more not shown", open.len() - shown));
            }
        }
        lines.into_iter().map(|l| fit(&l, width)).collect()
    }

    fn header(&self, budget: Option<RateLimitStatus>) -> String {
        let count = |f: fn(&Activity) -> bool| self.activity.values().filter(|a| f(a)).count();
        let finished = count(|a| matches!(a, Activity::Finished { .. }));
        let waiting = count(|a| {
            matches!(a, Activity::RateLimitWait { .. } | Activity::Retrying { .. } | Activity::Parked { .. })
                || matches!(a, Activity::AwaitingSnapshot { .. })
        });
        let reading = count(|a| matches!(a, Activity::Reading { .. }));
        let queued = self.tables.len() - self.activity.len();
        let requests: u64 = self.requests.values().sum();
        let tables = self.tables.len();
        let mut header = format!(
            "{} · {reading} reading, {waiting} waiting, {finished} done, {queued} queued of {tables} · {}",
            self.integration,
            self.against_expected(requests)
        );
        if let Some(b) = budget {
            let reset = DateTime::<Utc>::from_timestamp(b.reset as i64, 0).map_or("-".into(), clock);
            header.push_str(&format!(" · window {}/{} left until {reset}", b.remaining, b.limit));
        }
        header.push_str(&format!(" · {:.0} s", self.started.elapsed().as_secs_f64()));
        header
    }

    /// `25 requests`, or against what was expected: `25/~120 requests, ETA 11:40:05` (and how
    /// many tables have no estimate).
    fn against_expected(&self, spent: u64) -> String {
        if self.expected.is_empty() {
            return format!("{spent} requests");
        }
        let total: u64 = self.expected.values().sum();
        let mut text = format!("{spent}/~{total} requests");
        let unknown = self.tables.iter().filter(|t| !self.expected.contains_key(*t)).count();
        if unknown > 0 {
            text.push_str(&format!(" (+{unknown} tables not estimated: `sync --plan`)"));
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        if spent > 0 && total > spent && elapsed > 1.0 {
            let left = (total - spent) as f64 * elapsed / spent as f64;
            let eta = Utc::now() + chrono::Duration::milliseconds((left * 1000.0) as i64);
            text.push_str(&format!(", ETA {}", clock(eta)));
        }
        text
    }

    fn table_line(&self, table: &str) -> String {
        let doing = match self.activity.get(table) {
            None => "queued".to_string(),
            Some(Activity::AwaitingSnapshot { of }) => format!("waiting for {of}' snapshot"),
            Some(Activity::Reading { rows, pages, requests }) => {
                format!("reading    {rows:>9} rows {pages:>6} pages {requests:>6} requests")
            }
            Some(Activity::RateLimitWait { until }) => format!("rate-limit window until {}", clock(*until)),
            Some(Activity::Retrying { attempt, of, wait, error }) => {
                format!("retry {attempt}/{of} in {:.0} s: {error}", wait.as_secs_f64().ceil())
            }
            Some(Activity::Parked { until }) => format!("parked until {} (rate-limit window)", clock(*until)),
            Some(Activity::Finished { state, rows }) => match state {
                RunState::Succeeded => format!("✓ succeeded {rows:>9} rows"),
                other => format!("✗ {}", other.as_str()),
            },
        };
        format!("  {table:<22} {doing}")
    }
}

/// `14:05:12` in the local time zone (the operator's clock).
fn clock(at: DateTime<Utc>) -> String {
    at.with_timezone(&Local).format("%H:%M:%S").to_string()
}

/// `line` cut to `width` characters: a line that wrapped would break redrawing in place.
fn fit(line: &str, width: usize) -> String {
    match line.char_indices().nth(width.saturating_sub(1)) {
        Some((cut, _)) if line.chars().count() > width => format!("{}…", &line[..cut]),
        _ => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn board(n: usize) -> Board {
        let names: Vec<&'static str> = capsule_core::catalog::TABLES.iter().take(n).map(|t| t.name).collect();
        Board::new("acme", names, BTreeMap::new())
    }

    #[test]
    fn every_table_has_one_line_when_there_is_room() {
        let mut b = board(22);
        b.update("parties", Activity::Reading { rows: 1200, pages: 12, requests: 13 });
        b.update("users", Activity::Finished { state: RunState::Succeeded, rows: 7 });
        let frame = b.frame(120, 40, None);
        assert_eq!(frame.len(), 23);
        assert!(frame[0].starts_with("acme · 1 reading, 0 waiting, 1 done, 20 queued of 22 · 13 requests"));
        assert!(frame.iter().any(|l| l.contains("parties") && l.contains("1200 rows")), "{frame:#?}");
    }

    #[test]
    fn a_short_screen_folds_finished_tables_and_counts_the_rest() {
        let mut b = board(22);
        for t in ["users", "teams", "countries", "currencies"] {
            b.update(t, Activity::Finished { state: RunState::Succeeded, rows: 1 });
        }
        let until = Utc::now() + chrono::Duration::seconds(30);
        b.update("parties", Activity::RateLimitWait { until });
        let error = "could not connect: Connection refused".to_string();
        b.update("tasks", Activity::Retrying { attempt: 3, of: 6, wait: Duration::from_millis(7200), error });
        let frame = b.frame(80, 10, None);
        assert_eq!(frame.len(), 10, "{frame:#?}");
        assert!(frame[1].contains("✓ 4 finished"), "{frame:#?}");
        assert!(frame.last().unwrap().contains("more not shown"), "{frame:#?}");
        assert!(frame.iter().any(|l| l.contains("rate-limit window until")), "{frame:#?}");
        for line in &frame {
            assert!(line.chars().count() <= 80, "{line}");
        }
        let names: Vec<&str> = frame.iter().filter_map(|l| l.split_whitespace().next()).collect();
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "no table twice: {frame:#?}");
    }

    #[test]
    fn the_header_counts_against_what_was_expected() {
        let names = vec!["parties", "users", "tasks"];
        let b = Board::new("acme", names, BTreeMap::from([("parties", 100), ("users", 20)]));
        assert_eq!(b.against_expected(30), "30/~120 requests (+1 tables not estimated: `sync --plan`)");
        assert_eq!(board(3).against_expected(30), "30 requests");
    }

    #[test]
    fn why_a_table_waits_is_said() {
        let mut b = board(22);
        let error = "could not connect: Connection refused".to_string();
        b.update("tasks", Activity::Retrying { attempt: 3, of: 6, wait: Duration::from_millis(7200), error });
        b.update("tracks", Activity::AwaitingSnapshot { of: "tasks" });
        let frame = b.frame(200, 40, None).join("\n");
        assert!(frame.contains("retry 3/6 in 8 s: could not connect: Connection refused"), "{frame}");
        assert!(frame.contains("waiting for tasks' snapshot"), "{frame}");
    }
}
