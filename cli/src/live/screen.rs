//! Drawing the live view in place on a terminal (stderr), and log lines above it: each update
//! is one write that erases the previous frame and draws the next, so a terminal never shows
//! two frames at once; a log line erases the frame first and the next tick draws it again.

use std::io::Write;
use std::sync::Mutex;

use crossterm::cursor::MoveToPreviousLine;
use crossterm::terminal::{Clear, ClearType};

/// Lines of the frame now on screen (0: none drawn, or erased by a log line).
static ON_SCREEN: Mutex<usize> = Mutex::new(0);

/// The escape sequence that erases the `lines` last drawn lines, the cursor left where the first was.
fn erase(lines: usize, out: &mut Vec<u8>) {
    if lines > 0 {
        let _ = crossterm::queue!(out, MoveToPreviousLine(lines as u16), Clear(ClearType::FromCursorDown));
    }
}

/// Replaces the frame on screen with `frame` (its lines already fit the terminal's width).
pub fn draw(frame: &[String]) {
    let mut on_screen = ON_SCREEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    erase(*on_screen, &mut out);
    for line in frame {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    let mut stderr = std::io::stderr().lock();
    if stderr.write_all(&out).and_then(|()| stderr.flush()).is_ok() {
        *on_screen = frame.len();
    }
}

/// Erases the frame (the view is over).
pub fn clear() {
    draw(&[]);
}

/// The terminal's columns and rows (80×24 when it does not say).
pub fn size() -> (usize, usize) {
    crossterm::terminal::size().map_or((80, 24), |(w, h)| (usize::from(w.max(20)), usize::from(h.max(5))))
}

/// The log writer: log lines go to stderr above the live view, when one is drawn.
#[derive(Clone, Copy, Default)]
pub struct AboveTheView;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for AboveTheView {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

/// One log event's text, written on drop in one piece.
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let mut on_screen = ON_SCREEN.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        erase(*on_screen, &mut out);
        out.append(&mut self.0);
        let _ = std::io::stderr().lock().write_all(&out);
        *on_screen = 0;
    }
}
