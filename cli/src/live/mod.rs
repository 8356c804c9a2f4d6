//! The live view of `sync` on a terminal: a header (tables by state, requests, the token's
//! rate-limit window) and one line per table saying what it does and why it waits, redrawn in
//! place and folded to the terminal's height. Off a terminal there is no view: progress is the
//! log lines, one per event.

mod board;
mod screen;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capsule_client::CapsuleClient;
use capsule_core::catalog::TableSpec;
use capsule_core::progress::{Activity, TablesProgress};

pub use screen::AboveTheView;

use board::Board;

/// How often the view is drawn.
const TICK: Duration = Duration::from_millis(200);

/// Whether `sync` draws a live view: stderr is a terminal.
pub fn wanted() -> bool {
    std::io::stderr().is_terminal()
}

/// A live view being drawn; [`LiveView::finish`] erases it.
pub struct LiveView {
    board: Arc<Mutex<Board>>,
    drawer: tokio::task::JoinHandle<()>,
}

impl LiveView {
    /// Starts drawing when stderr is a terminal (None otherwise). `expected`: what each table's
    /// run is expected to spend, where known; `client` tells the token's rate-limit window as
    /// Capsule last reported it.
    pub fn start(
        integration: &str,
        tables: &[&'static TableSpec],
        expected: BTreeMap<&'static str, u64>,
        client: &CapsuleClient,
    ) -> Option<LiveView> {
        if !wanted() {
            return None;
        }
        let names = tables.iter().map(|t| t.name).collect();
        let board = Arc::new(Mutex::new(Board::new(integration, names, expected)));
        let (view, client) = (board.clone(), client.clone());
        let drawer = tokio::spawn(async move {
            loop {
                let (width, height) = screen::size();
                // One line short of the screen: the cursor's line after the frame.
                let frame = view.lock().unwrap().frame(width.saturating_sub(1), height - 1, client.rate_limit());
                screen::draw(&frame);
                tokio::time::sleep(TICK).await;
            }
        });
        Some(LiveView { board, drawer })
    }

    /// What the engine calls with each table's activity.
    pub fn callback(&self) -> TablesProgress {
        let board = self.board.clone();
        Arc::new(move |table: &'static str, activity: Activity| board.lock().unwrap().update(table, activity))
    }

    /// Stops drawing and erases the view (the summary that follows says how each table ended).
    pub async fn finish(self) {
        self.drawer.abort();
        // Waited for: a frame drawn after the erase would stay on screen.
        let _ = self.drawer.await;
        screen::clear();
    }
}
